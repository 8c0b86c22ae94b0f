"""The Django recipe (examples/recipes/django_bot): the kit on Django's WSGI and ASGI apps, and the
project under gunicorn and uvicorn with a real worker whose callbacks write through the ORM."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.recipes.conftest import AUTH, ROOT
from wa_middleware import testing

pytest.importorskip("django")

MANAGE = ROOT / "examples" / "recipes" / "django_bot" / "manage.py"


@pytest.fixture(scope="module")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The project set up in this process, on a database of its own (Django's settings are per process)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DJANGO_SETTINGS_MODULE", "examples.recipes.django_bot.settings")
        env.setenv("DJANGO_BOT_DB", str(tmp_path_factory.mktemp("django") / "db.sqlite3"))
        from django.core.management import call_command
        from django.db import connections

        from examples.recipes.django_bot import asgi, hooks, wsgi
        from examples.recipes.django_bot.inbox.models import InboundMessage, StatusUpdate

        call_command("migrate", verbosity=0)
        yield SimpleNamespace(
            asgi=asgi.application, wsgi=wsgi.application, hooks=hooks, inbound=InboundMessage, statuses=StatusUpdate
        )
        connections.close_all()


@pytest.mark.parametrize("entry", ["asgi", "wsgi"])
def test_the_kit_posts_through_django_and_runs_the_orm_callbacks(django_project: Any, entry: str) -> None:
    app = getattr(django_project, entry)
    delivery = testing.text(f"Hi over {entry}", name="Ana") + testing.status("failed", error_code=131047)
    # Django's ASGI handler refuses the lifespan scope the kit's client sends: the kit does without.
    answer = testing.post(app, delivery, auth=AUTH)
    assert len(answer.stored) == 1
    assert not django_project.inbound.objects.filter(body=f"Hi over {entry}").exists()  # nothing ran yet
    result = answer.run()
    assert result.names == [
        "examples.recipes.django_bot.hooks.store_text",
        "examples.recipes.django_bot.hooks.track_status",
    ]
    row = django_project.inbound.objects.get(body=f"Hi over {entry}")
    assert (row.sender, row.sender_name) == (testing.SENDER, "Ana")
    status = django_project.statuses.objects.get(wamid=result.calls[1].data.id)
    assert (status.status, status.error_code) == ("failed", 131047)
    # The path is exact: Django's habit of a trailing slash reaches Django, which has no such route.
    testing.post(app, testing.text(), auth=AUTH, path="/webhook/", expect=404)
    testing.post(app, testing.text(), auth=("360dialog", "wrong"), expect=401)


def test_a_callback_that_runs_again_updates_its_row(django_project: Any) -> None:
    text = testing.text("once")
    testing.run(django_project.hooks.wa, text)
    testing.run(django_project.hooks.wa, text)  # a redelivery the worker could not tell apart
    assert django_project.inbound.objects.filter(body="once").count() == 1


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_the_project_under_a_real_server_with_a_worker(server: str, spawn: Any, recipe_env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "--verbosity", "0"],
        env={**os.environ, **recipe_env},
        check=True,
        timeout=60,
    )
    if server == "gunicorn":
        proc = spawn.gunicorn("examples.recipes.django_bot.wsgi:application", **recipe_env)
    else:
        proc = spawn.uvicorn("examples.recipes.django_bot.asgi:application", **recipe_env)
    body = testing.text(f"Hi from {server}", name="Ana").to_bytes()
    with httpx.Client(base_url=proc.url, timeout=10) as client:
        assert client.post("/webhook", content=body, auth=AUTH).status_code == 200
        assert client.post("/webhook", content=body, auth=("360dialog", "wrong")).status_code == 401
        assert client.post("/webhook/", content=body, auth=AUTH).status_code == 404  # Django's own 404
        assert client.get("/").json() == {"messages": 0, "latest": []}  # Django still serves its routes
        # The worker's entry sets Django up before the callbacks' module imports the models.
        spawn.worker("examples.recipes.django_bot.worker:wa", **recipe_env)
        wait_until(lambda: client.get("/").json()["messages"] == 1)
        assert client.get("/").json()["latest"] == [{"sender": testing.SENDER, "body": f"Hi from {server}"}]
    with contextlib.closing(sqlite3.connect(recipe_env["DJANGO_BOT_DB"])) as db:
        rows = db.execute("select sender_name, body from inbox_inboundmessage").fetchall()
    assert rows == [("Ana", f"Hi from {server}")]
