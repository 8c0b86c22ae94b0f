"""(7) SIGTERM of the web process under load: requests in flight finish; every 200 is stored.

A request whose body is half sent when SIGTERM arrives is the in-flight case made certain: it
must still get its 200 and be in Redis. Around it, eight clients post on fresh connections; once
the listener is closed they are refused (never a half answer), and every 200 any of them got is
in the queue.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.faults.conftest import AUTH, Load, add_row, delivery, stored_ids

SERVERS = [
    pytest.param(("uvicorn", "starlette_app:app"), id="uvicorn"),
    pytest.param(("gunicorn", "flask_app:app"), id="gunicorn"),
]


def _half_sent(port: int, message_id: str) -> tuple[socket.socket, bytes]:
    import base64

    body = delivery(message_id)
    token = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
    head = (
        f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head + body[: len(body) // 2])
    return sock, body[len(body) // 2 :]


def _read_status(sock: socket.socket) -> int | None:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    finally:
        sock.close()
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data[9:12])


@pytest.mark.parametrize("server_kind", SERVERS)
def test_sigterm_under_load(server_kind: tuple[str, str], spawn, redis_url: str, namespace: str, events_file) -> None:  # type: ignore[no-untyped-def]
    kind, app = server_kind
    env = {"WA_BROKER_URL": redis_url, "WA_NAMESPACE": namespace, "WA_EVENTS": str(events_file)}
    proc = spawn.gunicorn(app, threads=8, **env) if kind == "gunicorn" else spawn.uvicorn(app, **env)
    assert proc.proc is not None and proc.port is not None
    load = Load(proc.url + "/webhook", threads=8, fresh_connections=True).start()
    try:
        load.wait_for(200, 100)
        sock, rest = _half_sent(proc.port, "wamid.inflight")
        time.sleep(0.2)  # let the server take the request in before the signal (not a timing assertion)
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the server is now shutting down, with our request half read
        sock.sendall(rest)
        inflight_status = _read_status(sock)
        code = proc.proc.wait(30)
    finally:
        load.stop()
    errors = {o.error for o in load.outcomes if o.error}
    accepted = load.accepted()
    stored = stored_ids(redis_url, namespace)
    unanswered = {o.message_id for o in load.outcomes if o.status is None}
    add_row(
        fault="7 SIGTERM under load", server=kind, answered_200=len(accepted), answered_503=load.count(503),
        refused=sum(1 for o in load.outcomes if o.error == "ConnectError"),
        reset_unread=sum(1 for o in load.outcomes if o.status is None and o.error != "ConnectError"),
        unanswered_but_stored=len(unanswered & stored), inflight_half_body=inflight_status, exit_code=code,
        losses=len(accepted - stored),
    )  # fmt: skip
    assert inflight_status == 200
    assert "wamid.inflight" in stored
    assert accepted <= stored  # every 200 is in Redis
    assert {o.status for o in load.outcomes} <= {200, 503, None}, load.summary()
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully; gunicorn exits 0.
    assert code in (0, -signal.SIGTERM)
    # Requests without an answer are those refused after the listener closed, or reset while still
    # in the kernel's accept queue: none of them reached the app (none is stored), so the sender's
    # redelivery is the only copy. A request that reached the app always got its answer.
    assert errors <= {"ConnectError", "ReadError", "RemoteProtocolError"}, load.summary()
    assert not unanswered & stored
