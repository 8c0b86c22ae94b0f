"""WSGI floor of "store, then answer": the WSGI ceiling plus one synchronous ``LPUSH`` of the body
before the 200, from one ``redis.Redis`` client per process (its pool gives each gunicorn thread a
connection of its own). No auth, no validation, no dramatiq message, no sharing of writes between
threads: the plainest durable WSGI endpoint, which the WSGI middleware is measured against, served
by gunicorn with exactly the middleware's settings (sync workers, and gthread)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import redis

from ._settings import FLOOR_KEY, REDIS_URL
from .ceiling_wsgi import BODY, HEADERS, read_body

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

_lock = threading.Lock()
_clients: list[redis.Redis] = []


def _client() -> redis.Redis:
    # Created on first use, so in each gunicorn worker after the fork, never shared across one.
    if not _clients:
        with _lock:
            if not _clients:
                _clients.append(redis.Redis.from_url(REDIS_URL))
    return _clients[0]


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    body = read_body(environ)
    _client().lpush(FLOOR_KEY, body)
    start_response("200 OK", HEADERS)
    return [BODY]
