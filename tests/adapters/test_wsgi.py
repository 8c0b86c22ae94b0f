"""The WSGI adapter through Werkzeug's test client, against a real Redis."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import redis
from wa_middleware.adapters.wsgi import WebhookMiddleware
from werkzeug.test import Client, EnvironBuilder

from wa_middleware import BasicAuth, Webhook

AUTH = ("u", "p")


class ClosingBody:
    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Any:
        yield b"app"

    def close(self) -> None:
        self.closed = True


def make_app() -> tuple[Any, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        calls.append({"path": environ["PATH_INFO"], "body": environ["wsgi.input"].read()})
        start_response("299 Custom", [("Content-Type", "text/plain")])
        return ClosingBody()

    return app, calls


def run(middleware: WebhookMiddleware, environ: dict[str, Any]) -> str:
    """Call the middleware as a WSGI server would and return the status line."""
    statuses: list[str] = []
    b"".join(middleware(environ, lambda status, headers, exc_info=None: statuses.append(status)))  # type: ignore[arg-type,func-returns-value]
    return statuses[0]


@pytest.fixture
def webhook(redis_url: str, namespace: str) -> Iterator[Webhook]:
    webhook = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, max_body_size=64)
    yield webhook
    webhook.close()


def queued(redis_url: str, namespace: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen(f"{namespace}:wa_middleware"))
    finally:
        client.close()


@pytest.mark.parametrize(
    "kwargs,status",
    [
        pytest.param({"data": b'{"a": 1}', "auth": AUTH}, 200, id="ok"),
        pytest.param({"data": b"{" + b" " * 70 + b"}", "auth": AUTH}, 413, id="over-cap"),
        pytest.param({"data": b"nope", "auth": AUTH}, 400, id="not-json"),
        pytest.param({"data": b"{}"}, 401, id="no-auth"),
        pytest.param({"data": b"{}", "auth": ("u", "x")}, 401, id="wrong-password"),
        pytest.param({"method": "GET", "auth": AUTH}, 405, id="get"),
    ],
)
def test_webhook_path(webhook: Webhook, redis_url: str, namespace: str, kwargs: dict[str, Any], status: int) -> None:
    app, calls = make_app()
    kwargs.setdefault("method", "POST")
    response = Client(WebhookMiddleware(app, webhook=webhook)).open("/webhook", **kwargs)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert calls == []
    assert queued(redis_url, namespace) == (1 if status == 200 else 0)


def test_body_without_length_counts_as_empty_unless_terminated(
    webhook: Webhook, redis_url: str, namespace: str
) -> None:
    """PEP 3333: without Content-Length the stream must not be read to its end, unless the server says it may."""
    app, _ = make_app()
    middleware = WebhookMiddleware(app, webhook=webhook)
    for terminated, expected in ((False, 400), (True, 200)):
        environ = EnvironBuilder("/webhook", method="POST", auth=AUTH).get_environ()
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input"] = io.BytesIO(b'{"a": 1}')
        environ["wsgi.input_terminated"] = terminated
        assert int(run(middleware, environ).split()[0]) == expected
    environ = EnvironBuilder("/webhook", method="POST", auth=AUTH).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = io.BytesIO(b"{" + b" " * 100 + b"}")
    environ["wsgi.input_terminated"] = True
    assert run(middleware, environ).startswith("413")
    assert queued(redis_url, namespace) == 1


def test_other_paths_pass_through_untouched(webhook: Webhook) -> None:
    app, calls = make_app()
    response = Client(WebhookMiddleware(app, webhook=webhook)).post("/other", data=b"payload")
    assert response.status_code == 299
    assert response.get_data() == b"app"
    assert calls == [{"path": "/other", "body": b"payload"}]


def test_unreachable_redis_is_a_503() -> None:
    webhook = Webhook(auth=BasicAuth("u", "p"), broker_url="redis://127.0.0.1:1/0", enqueue_timeout=0.5)
    app, _ = make_app()
    response = Client(WebhookMiddleware(app, webhook=webhook)).post("/webhook", data=b"{}", auth=AUTH)
    webhook.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"


def test_concurrent_threads_each_get_a_definite_answer(webhook: Webhook, redis_url: str, namespace: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    app, _ = make_app()
    middleware = WebhookMiddleware(app, webhook=webhook)

    def post(i: int) -> int:
        return Client(middleware).post("/webhook", data=b'{"n": %d}' % i, auth=AUTH).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(post, range(300)))
    assert statuses == [200] * 300
    assert queued(redis_url, namespace) == 300


def test_header_names_cache_is_bounded_and_never_in_the_way(redis_url: str, namespace: str) -> None:
    """Environ keys are turned into header names through a bounded table of the ones seen before: a
    client sending hundreds of made-up names fills it, and a header first seen after that still counts."""
    from wa_middleware.adapters import wsgi as wsgi_adapter

    from wa_middleware import HeaderAuth

    webhook = Webhook(auth=HeaderAuth("X-Late-Token", "t"), broker_url=redis_url, namespace=namespace)
    client = Client(WebhookMiddleware(make_app()[0], webhook=webhook))
    for i in range(0, wsgi_adapter._MAX_NAMES + 50, 25):
        junk = {f"X-Junk-{i + j}": "v" for j in range(25)}
        assert client.post("/webhook", data=b"{}", headers=junk).status_code == 401
    assert len(wsgi_adapter._NAMES) <= wsgi_adapter._MAX_NAMES
    assert client.post("/webhook", data=b"{}", headers={"X-Late-Token": "t"}).status_code == 200
    webhook.close()
