"""Floor of "store, then answer": the ceiling app plus one ``redis.asyncio`` LPUSH of the body
before the 200. No auth, no validation, no dramatiq message: nothing a real endpoint can skip
is cheaper than this, so wa-middleware's throughput is reported as a fraction of it."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aredis

from ._settings import FLOOR_KEY, REDIS_URL
from .ceiling import answer, lifespan, read_body

_clients: dict[int, aredis.Redis] = {}


def _client() -> aredis.Redis:
    # One client per process, created inside the running loop it is bound to.
    client = _clients.get(0)
    if client is None:
        client = _clients[0] = aredis.Redis.from_url(REDIS_URL)
    return client


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = await read_body(receive)
    await _client().lpush(FLOOR_KEY, body)
    await answer(send)
