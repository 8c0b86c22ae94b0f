"""Request-path limits through real servers, with raw sockets: stalled and trickled bodies, lying
Content-Length, chunked framing, repeated and huge headers. Nothing here is ever stored."""

from __future__ import annotations

import base64
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import PAYLOADS, Process, _env, free_port
from tests.e2e.test_servers import queue_length

TOKEN = base64.b64encode(b"testuser:testpass").decode()
GOOD = (PAYLOADS / "text.json").read_bytes()


def head(length: int | None = None, *extra: str, auth: bool = True) -> bytes:
    lines = ["POST /webhook HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", "Connection: close"]
    if auth:
        lines.append(f"Authorization: Basic {TOKEN}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(port: int, *parts: bytes, pause: float = 0.0, close_write: bool = False) -> bytes:
    """Send ``parts`` (pausing between them), then read until the server closes (bounded: 30 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            for i, part in enumerate(parts):
                if i and pause:
                    time.sleep(pause)
                sock.sendall(part)
            if close_write:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before we are done sending
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
        return data


def status(data: bytes) -> int | None:
    return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[Process, str]]:
    """One uvicorn for the whole module (starting one per case would cost a minute of CI)."""
    namespace = f"wa-test-{uuid.uuid4().hex[:12]}"
    tmp = tmp_path_factory.mktemp("limits")
    env = _env(
        WA_BROKER_URL=redis_url, WA_NAMESPACE=namespace, WA_EVENTS=str(tmp / "events.jsonl"),
        WA_BODY_TIMEOUT="1", WA_MAX_BODY="65536",
    )  # fmt: skip
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "starlette_app:app", "--port", str(port), "--log-level", "warning"]
    proc = Process(args, env, tmp / "uvicorn.log", port).start()
    yield proc, namespace
    proc.stop()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def uvicorn(server: tuple[Process, str], redis_url: str) -> Iterator[Process]:
    """The shared server; checks that the test stored nothing but the good deliveries it sent."""
    proc, namespace = server
    before = queue_length(redis_url, namespace)
    proc.good_sent = 0  # type: ignore[attr-defined]
    yield proc
    assert queue_length(redis_url, namespace) == before + proc.good_sent  # type: ignore[attr-defined]


def send_good(proc: Process) -> int | None:
    proc.good_sent += 1  # type: ignore[attr-defined]
    return status(exchange(proc.port, head(len(GOOD)) + GOOD))  # type: ignore[arg-type]


def test_stalled_body_gets_408(uvicorn: Process) -> None:
    # Headers promise 100 bytes, 10 come, then nothing: the body deadline (1 s here) answers 408.
    data = exchange(uvicorn.port, head(100) + b'{"object":')
    assert status(data) == 408
    assert b"connection: close" in data.lower()


def test_trickled_body_gets_408(uvicorn: Process) -> None:
    # One byte every 0.25 s: each read is quick, but the whole body is not in within the deadline.
    body = GOOD[:40]
    data = exchange(uvicorn.port, head(len(GOOD)), *[body[i : i + 1] for i in range(len(body))], pause=0.25)
    assert status(data) == 408


@pytest.mark.parametrize(
    "parts,close_write,expected",
    [
        pytest.param((head(len(GOOD) + 50) + GOOD,), True, {None}, id="length-too-big-then-eof"),
        pytest.param((head(len(GOOD) - 5) + GOOD,), False, {400}, id="length-too-small"),
        pytest.param((head(10**9) + GOOD,), False, {413}, id="length-over-cap"),
        pytest.param((head(None, "Content-Length: 5", f"Content-Length: {len(GOOD)}") + GOOD,), False, {400},
                     id="two-lengths"),
        pytest.param((head(None, "Content-Length: -1") + GOOD,), False, {400}, id="negative-length"),
        pytest.param((head(None, "Content-Length: abc") + GOOD,), False, {400}, id="text-length"),
        pytest.param((head(None, "Transfer-Encoding: chunked") + b"zz\r\n" + GOOD,), False, {400}, id="bad-chunk"),
        pytest.param((head(None, "Transfer-Encoding: chunked") + b"11170\r\n" + b"{" * 0x11170 + b"\r\n0\r\n\r\n",),
                     False, {413}, id="chunked-over-cap"),
        pytest.param((head(None, "Transfer-Encoding: chunked") + b"5\r\n{\"a\":\r\n",), True, {None},
                     id="chunked-truncated"),
        pytest.param((head(len(GOOD), f"Authorization: Basic {TOKEN}") + GOOD,), False, {401}, id="two-auth"),
        pytest.param((head(len(GOOD), "X-Big: " + "a" * 200_000) + GOOD,), False, {400, 431, None},
                     id="huge-header"),
        pytest.param((head(len(GOOD), *[f"X-H{i}: v" for i in range(2000)], auth=False) + GOOD,), False,
                     {401, 400, 431, None}, id="many-headers"),
        pytest.param((head(len(GOOD), auth=False) + GOOD,), False, {401}, id="no-auth"),
        pytest.param((head(len(GOOD), "Authorization: Basic \xff\xfe") + GOOD,), False, {401}, id="binary-auth"),
    ],
)  # fmt: skip
def test_malformed_framing(uvicorn: Process, parts: tuple[bytes, ...], close_write: bool, expected: set[int]) -> None:
    assert status(exchange(uvicorn.port, *parts, close_write=close_write)) in expected  # type: ignore[arg-type]
    # The server is alive and still accepts a good delivery afterwards.
    assert send_good(uvicorn) == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "", "∅"])
def test_content_type_is_not_policed(uvicorn: Process, content_type: str) -> None:
    """The body must be an authenticated JSON object; its label is not checked (a 4xx on a real
    delivery would only be redelivered for days)."""
    request = head(len(GOOD)).replace(b"Content-Type: application/json", f"Content-Type: {content_type}".encode())
    uvicorn.good_sent += 1  # type: ignore[attr-defined]
    assert status(exchange(uvicorn.port, request + GOOD)) == 200  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "parts,close_write,expected",
    [
        pytest.param((head(100) + b'{"object":',), False, {408}, id="stalled-body"),
        pytest.param((head(len(GOOD) + 50) + GOOD,), True, {400}, id="length-too-big-then-eof"),
        pytest.param((head(None, "Transfer-Encoding: chunked") + b'5\r\n{"a":\r\n',), True, {400},
                     id="chunked-truncated"),
        pytest.param((head(None, "Transfer-Encoding: chunked") + b"zz\r\n" + GOOD,), False, {400}, id="bad-chunk"),
    ],
)  # fmt: skip
def test_gunicorn_broken_bodies(spawn, redis_url: str, namespace: str, tmp_path, parts, close_write, expected) -> None:  # type: ignore[no-untyped-def]
    """Under gunicorn a stalled body is cut after body_timeout of silence, and a body the server
    cannot frame is a 400, not an internal error."""
    env = {"WA_BROKER_URL": redis_url, "WA_NAMESPACE": namespace, "WA_EVENTS": str(tmp_path / "e"),
           "WA_BODY_TIMEOUT": "1"}  # fmt: skip
    proc = spawn.gunicorn("flask_app:app", **env)
    assert status(exchange(proc.port, *parts, close_write=close_write)) in expected
    assert status(exchange(proc.port, head(len(GOOD)) + GOOD)) == 200
    assert queue_length(redis_url, namespace) == 1
    assert "Traceback" not in Path(proc.log).read_text()
