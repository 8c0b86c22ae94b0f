"""The Litestar recipe (examples/recipes/litestar_app.py) and `wa_middleware.adapters.litestar`."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.recipes.conftest import AUTH, queued
from wa_middleware import BasicAuth, ConfigurationError, Webhook, testing

pytest.importorskip("litestar")

from litestar import Litestar, get
from litestar.middleware import DefineMiddleware
from wa_middleware.adapters.asgi import WebhookMiddleware
from wa_middleware.adapters.litestar import WebhookPlugin


@get("/")
async def home() -> dict[str, str]:
    return {"shop": "open"}


@pytest.fixture(autouse=True)
def _keep_root_logging() -> Iterator[None]:
    """Litestar's default logging config takes the root logger (INFO, a handler of its own) when an
    app is made: give the tests after these the session's logging back."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture
def litestar_app() -> ModuleType:
    from examples.recipes import litestar_app

    return litestar_app


@pytest.mark.parametrize("path", ["/webhook", "/webhook/"])
def test_the_plugin_serves_the_path_with_or_without_a_slash(litestar_app: ModuleType, path: str) -> None:
    answer = testing.post(litestar_app.app, testing.text("hi", name="Ana"), auth=AUTH, path=path)
    assert answer.run().names == ["examples.recipes.litestar_app.on_text"]
    testing.post(litestar_app.app, testing.text(), auth=("360dialog", "wrong"), path=path, expect=401)


def test_the_app_keeps_its_routes_and_the_core_its_answers(litestar_app: ModuleType) -> None:
    with testing.capture(litestar_app.wa), testing._test_client_class()(litestar_app.app) as client:
        assert client.get("/").json() == {"shop": "open"}
        assert client.get("/webhook").status_code == 405  # every method reaches the core, which decides
        assert client.get("/webhook").headers["allow"] == "POST"
        assert client.post("/elsewhere").status_code == 404


def test_the_plugin_serves_the_health_path_too() -> None:
    wa = Webhook(auth=BasicAuth("u", "p"), broker_url="redis://127.0.0.1:9/0", health_path="/healthz")
    app = Litestar([home], plugins=[WebhookPlugin(wa)])
    with testing._test_client_class()(app) as client:
        answer = client.get("/healthz")
    assert answer.status_code == 503 and answer.json()["status"] == "unavailable"  # nothing listens on port 9


def test_the_middleware_setting_is_refused_loudly() -> None:
    wa = Webhook(auth=BasicAuth("u", "p"))
    misplaced = [DefineMiddleware(WebhookMiddleware, webhook=wa)]
    # Litestar builds it around each route: it would never see /webhook, and every delivery would 404.
    with pytest.raises(ConfigurationError, match="Litestar routes a request before its middleware runs"):
        testing.post(Litestar([home], middleware=misplaced), testing.text(), auth=("u", "p"))
    with pytest.raises(ConfigurationError, match=re.escape("plugins=[WebhookPlugin(wa)]")):
        Litestar([home], middleware=misplaced, plugins=[WebhookPlugin(wa)])
    with pytest.raises(ConfigurationError, match=r"must be a wa_middleware\.Webhook"):
        WebhookPlugin("wa")  # type: ignore[arg-type]


def test_wrapping_the_app_from_outside_works_too() -> None:
    wa = Webhook(auth=BasicAuth("u", "p"))
    app = WebhookMiddleware(Litestar([home]), webhook=wa)
    assert len(testing.post(app, testing.text(), auth=("u", "p")).stored) == 1
    # From outside, the path is exact: Litestar's router, not the webhook, gets "/webhook/".
    testing.post(app, testing.text(), auth=("u", "p"), path="/webhook/", expect=404)


def test_the_plugin_takes_route_options() -> None:
    wa = Webhook(auth=BasicAuth("u", "p"), path="/hooks/wa/")
    plugin = WebhookPlugin(wa, opt={"exclude_from_csrf": False, "team": "bots"})
    assert plugin.route_handler().opt == {"exclude_from_auth": True, "exclude_from_csrf": False, "team": "bots"}
    app = Litestar([home], plugins=[plugin])
    # A path configured with a trailing slash is served under both forms too.
    for path in ("/hooks/wa/", "/hooks/wa"):
        assert len(testing.post(app, testing.text(), auth=("u", "p"), path=path).stored) == 1


def test_the_recipe_under_uvicorn_with_a_worker(spawn: Any, recipe_env: dict[str, str], redis_url: str) -> None:
    proc = spawn.uvicorn("examples.recipes.litestar_app:app", **recipe_env)
    with httpx.Client(base_url=proc.url, timeout=10) as client:
        for path in ("/webhook", "/webhook/"):
            body = testing.text(f"hi at {path}", name="Ana").to_bytes()
            assert client.post(path, content=body, auth=AUTH).status_code == 200
        assert client.get("/").json() == {"shop": "open"}
    assert queued(redis_url, recipe_env["WA_NAMESPACE"]) == 2
    worker = spawn.worker("examples.recipes.litestar_app:wa", **recipe_env)
    wait_until(lambda: "'hi at /webhook/'" in worker.log.read_text() and "'hi at /webhook'" in worker.log.read_text())
    assert "[callback] Ana wrote 'hi at /webhook'" in worker.log.read_text()


def test_the_middleware_setting_fails_at_startup_outside_the_kit_too() -> None:
    """Without the testing kit (a real server): the middleware itself refuses Litestar's inner app."""
    from litestar.testing import TestClient

    wa = Webhook(auth=BasicAuth("u", "p"))
    with pytest.raises(ConfigurationError, match="Litestar routes a request before its middleware runs"):
        app = Litestar([home], middleware=[DefineMiddleware(WebhookMiddleware, webhook=wa)])
        with TestClient(app) as client:  # where Litestar builds the stack lazily
            client.post("/webhook", content=testing.text().to_bytes(), auth=("u", "p"))
