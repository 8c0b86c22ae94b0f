"""The auth modes through real servers: the body-needing signature schemes and Meta's handshake
take the same path through both adapters."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import pytest

from tests.conftest import PAYLOADS
from tests.e2e.test_servers import queue_length

BODY = (PAYLOADS / "text.json").read_bytes()
SERVERS = [
    pytest.param(("uvicorn", "starlette_app:app"), id="uvicorn"),
    pytest.param(("gunicorn", "flask_app:app"), id="gunicorn"),
]


def sign(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def start(spawn, kind: str, app: str, redis_url: str, namespace: str, tmp_path, **env: str):  # type: ignore[no-untyped-def]
    env = {"WA_BROKER_URL": redis_url, "WA_NAMESPACE": namespace, "WA_EVENTS": str(tmp_path / "e"), **env}
    return getattr(spawn, kind)(app, **env)


@pytest.mark.parametrize("server", SERVERS)
def test_basic_and_360dialog_signature(server, spawn, redis_url: str, namespace: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = start(spawn, *server, redis_url, namespace, tmp_path, WA_AUTH="basic+360dialog")
    url = proc.url + "/webhook"
    auth = ("testuser", "testpass")
    good = sign(b"partner-secret", BODY)
    with httpx.Client(timeout=10) as client:
        cases = [
            ({"x-360dialog-signature": good}, auth, 200),
            ({"x-360dialog-signature": "sha256=" + good}, auth, 200),
            ({"x-360dialog-signature": good}, None, 401),
            ({}, auth, 401),
            ({"x-360dialog-signature": sign(b"other", BODY)}, auth, 401),
            ({"x-360dialog-signature": "sha256=zz"}, auth, 401),
        ]
        for headers, basic, expected in cases:
            response = client.post(url, content=BODY, headers=headers, auth=basic)
            assert response.status_code == expected, (headers, basic)
        tampered = client.post(url, content=BODY + b" ", headers={"x-360dialog-signature": good}, auth=auth)
        assert tampered.status_code == 401
    assert queue_length(redis_url, namespace) == 2


@pytest.mark.parametrize("server", SERVERS)
def test_header_token_rotation(server, spawn, redis_url: str, namespace: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = start(spawn, *server, redis_url, namespace, tmp_path, WA_AUTH="token")
    with httpx.Client(timeout=10) as client:
        statuses = [
            client.post(proc.url + "/webhook", content=BODY, headers={"X-Webhook-Token": token}).status_code
            for token in ("tok-new", "tok-old", "tok-older", "")
        ]
    assert statuses == [200, 200, 401, 401]


@pytest.mark.parametrize("server", SERVERS)
def test_meta_signature_and_handshake(server, spawn, redis_url: str, namespace: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = start(spawn, *server, redis_url, namespace, tmp_path, WA_AUTH="meta", WA_VERIFY_TOKEN="vt-123")
    url = proc.url + "/webhook"
    with httpx.Client(timeout=10) as client:
        ok = client.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "vt-123", "hub.challenge": "1158"})
        assert (ok.status_code, ok.text) == (200, "1158")
        assert ok.headers["content-type"].startswith("text/plain")
        bad = client.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"})
        assert bad.status_code == 403
        assert client.get(url).status_code == 403
        signature = "sha256=" + sign(b"meta-app-secret", BODY)
        assert client.post(url, content=BODY, headers={"X-Hub-Signature-256": signature}).status_code == 200
        assert client.post(url, content=BODY, headers={"X-Hub-Signature-256": signature[7:]}).status_code == 401
        assert client.put(url, content=BODY).headers["allow"] == "GET, POST"
    assert queue_length(redis_url, namespace) == 1
