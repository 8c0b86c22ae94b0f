"""Test helpers of the operator tooling: free ports in 7200-7299, a private Redis, a recording HTTP server."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PORTS = range(7200, 7300)


def free_port() -> int:
    """A port of 7200-7299 that nothing listens on right now (random start: parallel sessions share it)."""
    candidates = list(PORTS)
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 7200-7299")


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@contextlib.contextmanager
def private_redis(tmp: Path) -> Iterator[str]:
    """A throw-away redis-server on a 72xx port; yields its URL and stops it afterwards."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port, 5)
        except TimeoutError:
            proc.kill()
            proc.wait()
            continue
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)
        return
    raise RuntimeError("could not start redis-server")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    delay: float = 0.0


@dataclass
class RecordingServer:
    """An HTTP server in a thread that records each request and answers from ``routes``."""

    port: int
    requests: list[Recorded] = field(default_factory=list)
    routes: dict[tuple[str, str], Reply] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, method: str, path: str, status: int = 200, body: Any = None, **kw: Any) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        self.routes[(method, path)] = Reply(status, raw, **kw)


@contextlib.contextmanager
def recording_server() -> Iterator[RecordingServer]:
    state = RecordingServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path
            state.requests.append(Recorded(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body))
            reply = state.routes.get((self.command, path), Reply(404, b'{"error": "not found"}'))
            if reply.delay:
                time.sleep(reply.delay)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            if reply.status in (301, 302, 307, 308):
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    for _ in range(10):
        port = free_port()
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError:
            continue
        break
    else:
        raise RuntimeError("no port for the recording server")
    state.port = port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- a webhook app served by uvicorn (ASGI) or gunicorn (WSGI), for health and metrics tests --

BIN = Path(sys.executable).parent

HEALTH_APP = """
import os
from starlette.applications import Starlette
from starlette.routing import Route
from wa_middleware import BasicAuth, Webhook
from wa_middleware.web.health import HealthCheck

wa = Webhook(
    auth=BasicAuth("user", "pass"),
    broker_url=os.environ["TEST_BROKER"],
    queue_name=os.environ["TEST_QUEUE"],
    health_path="/healthz",
    metrics_path=os.environ.get("TEST_METRICS") or None,
)
standalone = HealthCheck(os.environ["TEST_BROKER"], timeout=0.5)

async def home(request):
    from starlette.responses import PlainTextResponse
    return PlainTextResponse("home")

if os.environ.get("TEST_KIND") == "wsgi":
    from wa_middleware.adapters.wsgi import WebhookMiddleware

    def inner(environ, start_response):
        if environ["PATH_INFO"] == "/standalone-health":
            return standalone.wsgi(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"home"]

    app = WebhookMiddleware(inner, webhook=wa)
else:
    from wa_middleware.adapters.asgi import WebhookMiddleware

    inner = Starlette(routes=[Route("/", home), Route("/standalone-health", standalone)])
    app = WebhookMiddleware(inner, webhook=wa)
"""


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def start_app(
    tmp_path: Path,
    kind: str,
    broker: str,
    metrics: str | None = None,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    (tmp_path / "healthapp.py").write_text(textwrap.dedent(HEALTH_APP))
    port = free_port()
    env = {
        **os.environ,
        "TEST_BROKER": broker,
        "TEST_QUEUE": f"wa-ops-test-{uuid.uuid4().hex[:8]}",
        "TEST_KIND": kind,
        "TEST_METRICS": metrics or "",
        "PYTHONPATH": str(tmp_path),
        **(extra_env or {}),
    }
    if kind == "asgi":
        argv = [str(BIN / "uvicorn"), "healthapp:app", "--port", str(port), "--log-level", "warning"]
    else:
        argv = [str(BIN / "gunicorn"), "-w", str(workers), "--threads", "4", "-b", f"127.0.0.1:{port}", "healthapp:app"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, 30)
    except TimeoutError:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(err.decode()) from None
    return proc, f"http://127.0.0.1:{port}"
