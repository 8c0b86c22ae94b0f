"""The body deadline: a request only a signature can authenticate gets ``signed_body_timeout``
(3 s at most) for its whole body, one a header credential vouched for gets ``body_timeout``;
through the ASGI adapter directly and the WSGI adapter over a real socket, read as gunicorn does."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from wa_middleware.adapters import wsgi as wsgi_adapter
from wa_middleware.adapters.asgi import WebhookMiddleware as AsgiMiddleware
from wa_middleware.adapters.wsgi import WebhookMiddleware as WsgiMiddleware

from wa_middleware import AllOf, AnyOf, BasicAuth, Dialog360Signature, HeaderAuth, HubSignature256, NoAuth, Webhook
from wa_middleware.testing import text
from wa_middleware.web.auth import Auth, authenticated_by_headers
from wa_middleware.web.core import SIGNED_BODY_TIMEOUT, Core

BODY = text("slow").to_bytes()
SIGNER = Dialog360Signature("partner-secret")
SIGNED = {"x-360dialog-signature": SIGNER.sign(BODY)}
BASIC = {"authorization": BasicAuth.header_value("u", "p")}
TOKEN = {"x-token": "t"}


def make_core(auth: Auth, **kwargs: Any) -> Core:
    params: dict[str, Any] = {"path": "/webhook", "auth": auth, "max_body_size": 1 << 20, "queue_name": "q",
                              "actor_name": "a", "enqueue_timeout": 1.0}  # fmt: skip
    params.update(kwargs)
    return Core(**params)


@pytest.mark.parametrize(
    "auth,headers,tight",
    [
        pytest.param(BasicAuth("u", "p"), BASIC, False, id="basic"),
        pytest.param(HeaderAuth("X-Token", "t"), TOKEN, False, id="token"),
        pytest.param(NoAuth(), {}, False, id="noauth"),
        pytest.param(SIGNER, SIGNED, True, id="360dialog"),
        pytest.param(HubSignature256("s"), {"x-hub-signature-256": "sha256=" + "0" * 64}, True, id="meta"),
        pytest.param(AllOf(BasicAuth("u", "p"), SIGNER), {**BASIC, **SIGNED}, False, id="basic-and-signature"),
        pytest.param(AllOf(BasicAuth("u", "p"), SIGNER), {**BASIC}, True, id="basic-and-missing-signature"),
        pytest.param(AnyOf(HeaderAuth("X-Token", "t"), SIGNER), SIGNED, True, id="token-or-signature:signature"),
        pytest.param(AnyOf(HeaderAuth("X-Token", "t"), SIGNER), {**TOKEN, **SIGNED}, False,
                     id="token-or-signature:token"),
        pytest.param(AnyOf(HeaderAuth("X-Token", "t"), SIGNER), {"x-token": "wrong", **SIGNED}, True,
                     id="token-or-signature:wrong-token"),
    ],
)  # fmt: skip
def test_body_deadline_follows_what_the_headers_proved(auth: Auth, headers: dict[str, str], tight: bool) -> None:
    core = make_core(auth, body_timeout=10.0)
    assert authenticated_by_headers(auth, headers) is not tight
    assert core.body_timeout_for(headers) == (SIGNED_BODY_TIMEOUT if tight else 10.0)


def test_signed_deadline_is_never_longer_than_body_timeout() -> None:
    assert make_core(SIGNER, body_timeout=1.5).body_timeout_for(SIGNED) == 1.5
    assert make_core(SIGNER, body_timeout=10.0, signed_body_timeout=0.5).body_timeout_for(SIGNED) == 0.5
    assert make_core(BasicAuth("u", "p"), signed_body_timeout=0.5).body_timeout_for(BASIC) == 10.0


class CustomScheme:
    """A third-party body scheme with neither ``precheck`` nor ``by_headers``: unauthenticated."""

    needs_body = True
    challenge = None

    def verify(self, headers: Any, body: bytes | None) -> bool:
        return body is not None


def test_custom_body_scheme_gets_the_tight_deadline() -> None:
    assert make_core(CustomScheme()).body_timeout_for({}) == SIGNED_BODY_TIMEOUT


@pytest.fixture
def webhooks(redis_url: str, namespace: str) -> Iterator[dict[str, Webhook]]:
    """A signature-only and a Basic-auth Webhook, with deadlines short enough for a unit test."""
    made = {}
    for name, auth in (("signed", SIGNER), ("basic", BasicAuth("u", "p"))):
        wa = Webhook(auth=auth, broker_url=redis_url, namespace=namespace, body_timeout=3.0)
        wa.core = make_core(auth, body_timeout=3.0, signed_body_timeout=0.4)
        made[name] = wa
    yield made
    for wa in made.values():
        wa.close()


def headers_for(kind: str) -> dict[str, str]:
    return {**(SIGNED if kind == "signed" else BASIC), "content-length": str(len(BODY))}


# --- ASGI ---------------------------------------------------------------------------------------


async def asgi_trickle(middleware: AsgiMiddleware, headers: dict[str, str], pause: float) -> tuple[int, float]:
    """The body in 8 pieces, ``pause`` seconds apart; returns the status and the time it took."""
    step = -(-len(BODY) // 8)
    pieces = [BODY[i : i + step] for i in range(0, len(BODY), step)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(pause)
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/webhook", "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}  # fmt: skip
    started = time.monotonic()
    await middleware(scope, receive, send)
    return sent[0]["status"], time.monotonic() - started


async def test_asgi_trickled_signed_body_is_cut_at_the_signed_deadline(webhooks: dict[str, Webhook]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not for the wrapped app")

    # 8 pieces 0.15 s apart: 1.2 s in all, past the signed deadline (0.4 s), within body_timeout (3 s).
    status, took = await asgi_trickle(AsgiMiddleware(app, webhook=webhooks["signed"]), headers_for("signed"), 0.15)
    assert status == 408
    assert 0.35 < took < 1.0
    status, _ = await asgi_trickle(AsgiMiddleware(app, webhook=webhooks["basic"]), headers_for("basic"), 0.15)
    assert status == 200
    await webhooks["signed"].aclose()
    await webhooks["basic"].aclose()


# --- WSGI, over a socket read as gunicorn reads it -----------------------------------------------


class SocketInput:
    """``wsgi.input`` as gunicorn's: ``read(n)`` loops over ``recv`` until it has ``n`` bytes or EOF
    (so a per-recv timeout alone never ends a trickle)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        return data


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


def wsgi_request(
    middleware: WsgiMiddleware, kind: str, send_body: Any
) -> tuple[str, float, socket.socket, socket.socket]:
    """Run one request over loopback TCP whose body ``send_body(client_socket)`` writes from another thread."""
    server, client = tcp_pair()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/webhook", "CONTENT_LENGTH": str(len(BODY)),
               "wsgi.input": SocketInput(server), "gunicorn.socket": server}  # fmt: skip
    for name, value in headers_for(kind).items():
        if name != "content-length":
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    writer = threading.Thread(target=send_body, args=(client,), daemon=True)
    writer.start()
    statuses: list[str] = []
    started = time.monotonic()
    b"".join(middleware(environ, lambda status, headers, exc_info=None: statuses.append(status)))  # type: ignore[arg-type,func-returns-value]
    took = time.monotonic() - started
    writer.join(5)
    return statuses[0], took, server, client


def trickle(pause: float, pieces: int = 8) -> Any:
    def send(client: socket.socket) -> None:
        step = -(-len(BODY) // pieces)
        try:
            for i in range(0, len(BODY), step):
                client.sendall(BODY[i : i + step])
                time.sleep(pause)
        except OSError:
            pass

    return send


def test_wsgi_trickled_signed_body_is_cut_at_the_signed_deadline(webhooks: dict[str, Webhook]) -> None:
    def app(environ: Any, start_response: Any) -> Any:
        raise AssertionError("not for the wrapped app")

    status, took, server, client = wsgi_request(
        WsgiMiddleware(app, webhook=webhooks["signed"]), "signed", trickle(0.15)
    )
    try:
        assert status.startswith("408")
        # Each recv was quick (0.15 s < 0.4 s): only the whole-body deadline ends it.
        assert 0.35 < took < 0.8
        # Only the reading side was shut: the 408 can still be written, and reaches the client.
        server.sendall(b"HTTP/1.1 408\r\n\r\n")
        client.settimeout(2)
        assert client.recv(64) == b"HTTP/1.1 408\r\n\r\n"
    finally:
        server.close()
        client.close()
    status, _, server, client = wsgi_request(WsgiMiddleware(app, webhook=webhooks["basic"]), "basic", trickle(0.15))
    server.close()
    client.close()
    assert status.startswith("200")


def test_wsgi_stalled_signed_body_is_cut_too(webhooks: dict[str, Webhook]) -> None:
    def stall(client: socket.socket) -> None:
        client.sendall(BODY[:10])

    middleware = WsgiMiddleware(lambda e, s: [], webhook=webhooks["signed"])
    status, took, server, client = wsgi_request(middleware, "signed", stall)
    server.close()
    client.close()
    assert status.startswith("408")
    assert took < 1.0


def test_wsgi_fast_body_disarms_its_deadline(webhooks: dict[str, Webhook]) -> None:
    """A body read in time leaves its socket alone: keep-alive goes on after the deadline."""
    middleware = WsgiMiddleware(lambda e, s: [], webhook=webhooks["signed"])
    status, _, server, client = wsgi_request(middleware, "signed", lambda client: client.sendall(BODY + b"next"))
    try:
        assert status.startswith("200")
        time.sleep(0.6)  # past the 0.4 s deadline
        server.settimeout(1)
        assert server.recv(4) == b"next"
        assert server.gettimeout() == 1
    finally:
        server.close()
        client.close()


def test_wsgi_deadlines_thread_is_one_for_many_requests(webhooks: dict[str, Webhook]) -> None:
    middleware = WsgiMiddleware(lambda e, s: [], webhook=webhooks["signed"])
    for _ in range(5):
        status, _, server, client = wsgi_request(middleware, "signed", lambda client: client.sendall(BODY))
        server.close()
        client.close()
        assert status.startswith("200")
    names = [t.name for t in threading.enumerate()]
    assert names.count("wa-body-deadlines") == 1
    assert wsgi_adapter._deadlines._thread is not None
    assert not wsgi_adapter._deadlines._heap  # finished reads leave nothing behind


def test_wsgi_deadlines_thread_is_not_woken_for_each_read() -> None:
    """Reads one after the other (a sync worker's life) notify the thread once, not per read: each
    later deadline comes after the one it already sleeps towards, or after its next idle look."""
    deadlines = wsgi_adapter._Deadlines()
    notified = []
    real_notify = deadlines._cond.notify

    def counting_notify(n: int = 1) -> None:
        notified.append(n)
        real_notify(n)

    deadlines._cond.notify = counting_notify  # type: ignore[method-assign]
    server, client = tcp_pair()
    try:
        for _ in range(50):
            deadlines.disarm(deadlines.arm(server, 3.0))
        assert len(notified) == 1
        assert not deadlines._heap
        # A deadline sooner than the idle thread's next look still wakes it, and cuts the read.
        watch = deadlines.arm(server, 0.05)
        server.settimeout(5)
        assert server.recv(10) == b""  # the reading side was shut down
        deadlines.disarm(watch)
        assert watch.fired and len(notified) == 2
    finally:
        server.close()
        client.close()
