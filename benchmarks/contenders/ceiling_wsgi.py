"""WSGI ceiling: the cheapest answer gunicorn can give, a bare WSGI app (no framework) that reads
the body and answers 200 with the same JSON body wa-middleware sends."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

BODY = b'{"status":"stored"}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def read_body(environ: WSGIEnvironment) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length else b""  # type: ignore[no-any-return]


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    read_body(environ)
    start_response("200 OK", HEADERS)
    return [BODY]
