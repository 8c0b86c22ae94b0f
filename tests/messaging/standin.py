"""A local stand-in for the Cloud API (360dialog's host and Meta's): it counts and records requests.

It answers like the real API by default (a wamid for each send, ``{"success": true}`` for a mark
as read, a media id for an upload, Meta's media info for a look-up, bytes for a download), and a
test can queue other answers: a status with a body and headers, a delay, or a connection dropped
without answering. Nothing here reaches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MEDIA_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
MEDIA_SHA256 = hashlib.sha256(MEDIA_BYTES).hexdigest()
#: What Meta's look-up answers as the URL; 360dialog serves its path and query on its own host.
META_MEDIA_URL = "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1234&ext=1700000000&hash=ATu_h"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)


@dataclass
class Answer:
    """A scripted answer: ``drop`` closes the connection after reading the request, without answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


def meta_error(code: int, message: str = "error", *, details: str | None = None, status: int = 400) -> Answer:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbC"}
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return Answer(status, {"error": error})


class StandIn:
    """The server: ``url``, ``requests`` (every one received), ``script(...)`` (answers to come)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        #: Called for each request after the script is empty; returns an answer or None for the default.
        self.handler: Callable[[Request], Answer | None] | None = None
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stalls

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
                answer = standin._answer(request)
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.drop:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if isinstance(answer.body, bytes):
                    payload, kind = answer.body, "application/octet-stream"
                else:
                    payload, kind = json.dumps(answer.body).encode(), "application/json"
                self.send_response(answer.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, *answers: Answer) -> None:
        with self._lock:
            self._script.extend(answers)

    def _answer(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            if self._script:
                return self._script.popleft()
        if self.handler is not None:
            custom = self.handler(request)
            if custom is not None:
                return custom
        return self.default(request)

    def default(self, request: Request) -> Answer:
        route = request.route
        if request.method == "POST" and route.endswith("/messages"):
            data = request.json
            if "status" in data:
                return Answer(200, {"success": True})
            n = next(self._ids)
            to = data.get("to")
            return Answer(
                200,
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": to, "wa_id": to}],
                    "messages": [{"id": f"wamid.STANDIN{n}", "message_status": "accepted"}],
                },
            )
        if request.method == "POST" and route.endswith("/media"):
            return Answer(200, {"id": "1037543291543636"})
        if route.startswith("/whatsapp_business/attachments"):
            return Answer(200, MEDIA_BYTES)
        if request.method == "DELETE":
            return Answer(200, {"success": True})
        if request.method == "GET":
            media_id = route.rsplit("/", 1)[-1]
            return Answer(
                200,
                {
                    "messaging_product": "whatsapp",
                    "url": META_MEDIA_URL,
                    "mime_type": "image/png",
                    "sha256": MEDIA_SHA256,
                    "file_size": str(len(MEDIA_BYTES)),
                    "id": media_id,
                },
            )
        return Answer(404, {"error": {"message": "no such route", "code": 100}})

    # -- what tests look at ------------------------------------------------------------------

    def sends(self) -> list[Request]:
        """The message sends received (mark-as-read excluded)."""
        return [r for r in list(self.requests) if r.route.endswith("/messages") and "status" not in r.json]

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self.requests))


def main() -> None:
    """``python -m tests.messaging.standin``: serve in a process of its own (so the client measured
    does not share its interpreter lock); prints the URL, counts requests at ``GET /__count``."""
    server = StandIn()
    default = server.default

    def counting(request: Request) -> Answer:
        if request.route == "/__count":
            return Answer(200, {"requests": len(server.requests) - 1})
        return default(request)

    server.default = counting  # type: ignore[method-assign]
    print(server.url, flush=True)
    server.server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
