"""The Falcon recipe (examples/recipes/falcon_app.py): WSGI and ASGI apps, each wrapped from outside."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.recipes.conftest import AUTH, queued
from wa_middleware import testing

pytest.importorskip("falcon")

from examples.recipes import falcon_app


@pytest.mark.parametrize("entry", ["app", "asgi_app"])
def test_the_kit_posts_through_falcon(entry: str) -> None:
    app = getattr(falcon_app, entry)
    answer = testing.post(app, testing.text("hi", name="Ana"), auth=AUTH)
    assert answer.run().names == ["examples.recipes.falcon_app.on_text"]
    testing.post(app, testing.text(), auth=("360dialog", "wrong"), expect=401)
    testing.post(app, testing.text(), auth=AUTH, path="/webhook/", expect=404)  # Falcon's own 404: the path is exact


@pytest.mark.parametrize("entry", ["app", "asgi_app"])
def test_falcon_keeps_its_routes(entry: str) -> None:
    app = getattr(falcon_app, entry)
    with testing.capture(falcon_app.wa):
        if entry == "app":
            from werkzeug.test import Client

            answer = Client(app).get("/orders/7")
            assert answer.status_code == 200 and answer.json == {"order_id": 7, "state": "shipped"}
        else:
            # Falcon's ASGI app runs its lifespan under the kit's client, as under uvicorn.
            with testing._test_client_class()(testing._OptionalLifespan(app)) as client:
                assert client.get("/orders/7").json() == {"order_id": 7, "state": "shipped"}


SERVERS = [pytest.param("gunicorn", "app", id="wsgi-gunicorn"), pytest.param("uvicorn", "asgi_app", id="asgi-uvicorn")]


@pytest.mark.parametrize("server,entry", SERVERS)
def test_the_recipe_under_a_real_server_with_a_worker(
    server: str, entry: str, spawn: Any, recipe_env: dict[str, str], redis_url: str
) -> None:
    proc = getattr(spawn, server)(f"examples.recipes.falcon_app:{entry}", **recipe_env)
    with httpx.Client(base_url=proc.url, timeout=10) as client:
        body = testing.text(f"hi from {server}", name="Ana").to_bytes()
        assert client.post("/webhook", content=body, auth=AUTH).status_code == 200
        assert client.get("/orders/7").json() == {"order_id": 7, "state": "shipped"}
    assert queued(redis_url, recipe_env["WA_NAMESPACE"]) == 1
    worker = spawn.worker("examples.recipes.falcon_app:wa", **recipe_env)
    wait_until(lambda: f"[callback] Ana wrote 'hi from {server}'" in worker.log.read_text())
