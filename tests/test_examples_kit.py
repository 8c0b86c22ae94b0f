"""The examples' own tests, written with wa_middleware.testing as a user would write them."""

from __future__ import annotations

import pytest

from examples import callbacks
from wa_middleware import testing


def test_text_runs_the_text_callback(capsys: pytest.CaptureFixture[str]) -> None:
    result = testing.run(callbacks.wa, testing.text("Where is my order?", sender="4915112345678", name="Ana"))
    assert result.ran(callbacks.on_text) and result.ran(callbacks.on_any_message)
    assert "[callback] text from Ana to" in capsys.readouterr().out


def test_failed_status_runs_both_status_callbacks(capsys: pytest.CaptureFixture[str]) -> None:
    result = testing.run(callbacks.wa, testing.status("failed", error_code=131047))
    assert result.names == ["examples.callbacks.on_status", "examples.callbacks.on_failed"]
    assert "delivery failed: 131047" in capsys.readouterr().out


def test_value_error_and_unknown_type(capsys: pytest.CaptureFixture[str]) -> None:
    result = testing.run(callbacks.wa, testing.error(130429) + testing.message("hologram", {"frames": 24}))
    assert result.ran(callbacks.on_error)
    assert [call.data.type for call in result.calls_of(callbacks.on_any_message)] == ["hologram"]
    out = capsys.readouterr().out
    assert "WhatsApp reported error 130429" in out and "hologram message" in out


def test_template_update_has_no_callback_in_the_examples() -> None:
    result = testing.run(callbacks.wa, testing.template_status("APPROVED"))
    assert result.names == [] and [e.kind for e in result.unhandled] == ["change"]


@pytest.mark.parametrize("module", ["examples.fastapi_app", "examples.starlette_app", "examples.flask_app"])
def test_the_apps_accept_and_refuse(
    module: str, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    app = importlib.import_module(module).app
    # Point the shared example Webhook at the test Redis, in a namespace of this test's own.
    monkeypatch.setattr(callbacks.wa, "_broker_url", redis_url)
    monkeypatch.setattr(callbacks.wa, "namespace", namespace)
    testing.post(app, testing.text("hi"), auth=("testuser", "testpass"))
    testing.post(app, testing.text("hi"), auth=("testuser", "wrong"), expect=401)
    callbacks.wa.close()
