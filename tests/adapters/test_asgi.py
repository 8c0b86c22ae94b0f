"""The ASGI adapter, driven directly with ASGI messages, against a real Redis."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from wa_middleware.adapters.asgi import WebhookMiddleware

from wa_middleware import BasicAuth, Webhook
from wa_middleware.errors import ConfigurationError

AUTH = [(b"authorization", b"Basic " + base64.b64encode(b"u:p"))]


class App:
    """A wrapped app that records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        if scope["type"] == "http":
            message = await receive()
            body = message.get("body", b"")
            await send({"type": "http.response.start", "status": 299, "headers": []})
            await send({"type": "http.response.body", "body": b"app"})
        self.calls.append({"type": scope["type"], "path": scope.get("path"), "body": body})


async def call(middleware: Any, scope: dict[str, Any], chunks: list[bytes | None]) -> tuple[int, dict[str, str], bytes]:
    """Run one request; a None chunk is a client disconnect."""
    pending = list(chunks)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not pending:
            await asyncio.sleep(3600)
        chunk = pending.pop(0)
        if chunk is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def scope(method: str = "POST", path: str = "/webhook", headers: list[tuple[bytes, bytes]] = AUTH) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b""}


@pytest.fixture
async def webhook(redis_url: str, namespace: str) -> AsyncIterator[Webhook]:
    webhook = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, max_body_size=64)
    yield webhook
    await webhook.aclose()


def stored(redis_url: str, namespace: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        ids = client.lrange(f"{namespace}:wa_middleware", 0, -1)
        assert client.hlen(f"{namespace}:wa_middleware.msgs") == len(ids)
        return ids  # type: ignore[no-any-return]
    finally:
        client.close()


@pytest.mark.parametrize(
    "request_scope,chunks,status",
    [
        pytest.param(scope(), [b'{"a": 1}'], 200, id="one-chunk"),
        pytest.param(scope(), [b'{"a"', b": ", b"1}"], 200, id="chunks"),
        pytest.param(scope(), [b"{" + b" " * 70 + b"}"], 413, id="over-cap-no-length"),
        pytest.param(scope(), [b"{" + b" " * 30, b" " * 40 + b"}"], 413, id="over-cap-in-chunks"),
        pytest.param(scope(headers=[*AUTH, (b"content-length", b"65")]), [b"{}"], 413, id="declared-over-cap"),
        pytest.param(scope(headers=[*AUTH, (b"content-length", b"x")]), [b"{}"], 400, id="bad-length"),
        pytest.param(scope(), [b"[]"], 400, id="array"),
        pytest.param(scope(headers=[]), [b"{}"], 401, id="no-auth"),
        pytest.param(scope(method="GET"), [], 405, id="get"),
        pytest.param(scope(), [b'{"a"', None], 400, id="disconnect"),
    ],
)
async def test_webhook_path(
    webhook: Webhook,
    redis_url: str,
    namespace: str,
    request_scope: dict[str, Any],
    chunks: list[bytes | None],
    status: int,
) -> None:
    app = App()
    got, headers, body = await call(WebhookMiddleware(app, webhook=webhook), request_scope, chunks)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert app.calls == []  # the wrapped app never sees the webhook path
    assert len(stored(redis_url, namespace)) == (1 if status == 200 else 0)


@pytest.mark.parametrize(
    "request_scope",
    [
        pytest.param(scope(path="/"), id="other-path"),
        pytest.param(scope(path="/webhook/"), id="trailing-slash"),
        pytest.param(scope(path="/webhooks"), id="prefix"),
        pytest.param(scope(path="/other", headers=[]), id="no-auth-elsewhere"),
    ],
)
async def test_other_paths_pass_through(webhook: Webhook, request_scope: dict[str, Any]) -> None:
    app = App()
    status, _, body = await call(WebhookMiddleware(app, webhook=webhook), request_scope, [b"payload"])
    assert (status, body) == (299, b"app")
    assert app.calls == [{"type": "http", "path": request_scope["path"], "body": b"payload"}]


async def test_lifespan_and_websocket_pass_through(webhook: Webhook) -> None:
    app = App()
    middleware = WebhookMiddleware(app, webhook=webhook)
    for kind in ("lifespan", "websocket"):
        await middleware({"type": kind, "path": "/webhook"}, None, None)
    assert [c["type"] for c in app.calls] == ["lifespan", "websocket"]


async def test_concurrent_deliveries_share_round_trips(webhook: Webhook, redis_url: str, namespace: str) -> None:
    middleware = WebhookMiddleware(App(), webhook=webhook)
    results = await asyncio.gather(*(call(middleware, scope(), [b'{"n": %d}' % i]) for i in range(200)))
    assert [r[0] for r in results] == [200] * 200
    assert len(set(stored(redis_url, namespace))) == 200


async def test_unreachable_redis_is_a_503(redis_url: str) -> None:
    webhook = Webhook(auth=BasicAuth("u", "p"), broker_url="redis://127.0.0.1:1/0", enqueue_timeout=0.5)
    status, headers, _ = await call(WebhookMiddleware(App(), webhook=webhook), scope(), [b"{}"])
    await webhook.aclose()
    assert status == 503
    assert headers["retry-after"] == "5"


def test_refuses_something_else_than_a_webhook() -> None:
    with pytest.raises(ConfigurationError):
        WebhookMiddleware(App(), webhook="wa")  # type: ignore[arg-type]


async def test_header_names_cache_is_bounded_and_never_in_the_way(redis_url: str, namespace: str) -> None:
    """Header names are looked up in a bounded table of the ones seen before: a client sending hundreds
    of made-up names fills it, and a header first seen after that is still read (here, the credential)."""
    from wa_middleware.adapters import asgi as asgi_adapter

    from wa_middleware import HeaderAuth

    webhook = Webhook(auth=HeaderAuth("X-Late-Token", "t"), broker_url=redis_url, namespace=namespace)
    middleware = WebhookMiddleware(App(), webhook=webhook)
    for i in range(0, asgi_adapter._MAX_NAMES + 50, 25):
        junk = [(f"x-junk-{i + j}".encode(), b"v") for j in range(25)]
        status, _, _ = await call(middleware, scope(headers=junk), [b"{}"])
        assert status == 401
    assert len(asgi_adapter._NAMES) <= asgi_adapter._MAX_NAMES
    status, _, _ = await call(middleware, scope(headers=[(b"X-Late-Token", b"t")]), [b"{}"])  # cased: lowered
    await webhook.aclose()
    assert status == 200


async def test_the_loops_enqueuer_is_remembered_until_closed(redis_url: str, namespace: str) -> None:
    webhook = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace)
    first = await webhook.async_enqueuer()
    assert await webhook.async_enqueuer() is first
    await webhook.aclose()
    second = await webhook.async_enqueuer()  # closed ones are never handed out again
    assert second is not first
    await second.enqueue("after-close", b"{}")
    await webhook.aclose()


def test_each_loop_gets_its_own_enqueuer(redis_url: str, namespace: str) -> None:
    webhook = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace)

    async def get() -> Any:
        enqueuer = await webhook.async_enqueuer()
        await enqueuer.enqueue("x", b"{}")
        await webhook.aclose()
        return enqueuer

    assert asyncio.run(get()) is not asyncio.run(get())
