"""Recording accepted deliveries and replaying their callbacks, against a real Redis."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
import redis
from wa_middleware.adapters.wsgi import WebhookMiddleware
from werkzeug.test import Client

from tests.conftest import APPS
from wa_middleware import testing
from wa_middleware.cli import main
from wa_middleware.keys import KeyLayout
from wa_middleware.ops.replay import parse_since


@pytest.fixture
def hooks(redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("WA_BROKER_URL", redis_url)
    monkeypatch.setenv("WA_NAMESPACE", namespace)
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("replay_hooks", None)
    module = importlib.import_module("replay_hooks")
    yield module
    module.wa.close()
    sys.modules.pop("replay_hooks", None)


def post(module: ModuleType, delivery: testing.Delivery) -> int:
    app = WebhookMiddleware(lambda environ, start_response: [], webhook=module.wa)
    return Client(app).post("/webhook", data=delivery.to_bytes(), auth=("u", "p")).status_code


def test_accepted_deliveries_are_recorded_and_replayed(hooks: ModuleType, redis_url: str, namespace: str) -> None:
    assert post(hooks, testing.text("one", id="wamid.A") + testing.status("read", message_id="wamid.OUT")) == 200
    assert post(hooks, testing.text("two", id="wamid.B")) == 200
    assert post(hooks, testing.status("failed", message_id="wamid.BAD")) == 200
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(KeyLayout(namespace).recorded) == 3  # same script call as the queue
    assert client.llen(f"{namespace}:wa_middleware") == 3
    client.close()

    assert main(["replay", "replay_hooks:wa", "--since", "1h", "--dry-run"]) == 0
    assert hooks.seen == []
    assert main(["replay", "replay_hooks:wa", "--since", "1h", "--kind", "messages"]) == 0
    assert hooks.seen == [("text", "wamid.A"), ("text", "wamid.B")]
    hooks.seen.clear()
    # Every matching callback runs again (no deduplication); a failing one is reported, exit 1.
    assert main(["replay", "replay_hooks:wa", "--since", "1h", "--callback", "replay_hooks.on_status"]) == 1
    assert hooks.seen == [("status", "wamid.OUT")]


def test_rejected_deliveries_are_not_recorded(hooks: ModuleType, redis_url: str, namespace: str) -> None:
    app = WebhookMiddleware(lambda environ, start_response: [], webhook=hooks.wa)
    assert Client(app).post("/webhook", data=b"{}", auth=("u", "wrong")).status_code == 401
    client = redis.Redis.from_url(redis_url)
    assert client.exists(KeyLayout(namespace).recorded) == 0
    client.close()


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1.5h", 5400)])
def test_parse_since(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["2", "h", "-1h", "2w", ""])
def test_parse_since_refuses(text: str) -> None:
    from wa_middleware.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        parse_since(text)
