"""The one `Webhook` every wa-middleware contender serves, with its callbacks.

The same module is imported by the web server and by ``wa-middleware worker``, so the
callbacks the worker runs are exactly the ones declared here.
"""

from __future__ import annotations

import threading
import time

import redis

from wa_middleware import BasicAuth, EventContext, Message, Status, Webhook

from ..payloads import AUTH_PASSWORD, AUTH_USER
from ._settings import LAG_KEY, NAMESPACE, QUEUE, RECORD_KEY, REDIS_URL, SLEEP_MS

wa = Webhook(
    auth=BasicAuth(AUTH_USER, AUTH_PASSWORD),
    path="/webhook",
    broker_url=REDIS_URL,
    queue_name=QUEUE,
    namespace=NAMESPACE,
    max_retries=0,
)

_local = threading.local()


def _redis() -> redis.Redis:
    client: redis.Redis | None = getattr(_local, "client", None)
    if client is None:
        client = _local.client = redis.Redis.from_url(REDIS_URL)
    return client


def _handle(event_id: str | None, ctx: EventContext) -> None:
    if LAG_KEY and ctx.received_at is not None:
        _redis().rpush(LAG_KEY, time.time() * 1000 - ctx.received_at)
    if SLEEP_MS:
        time.sleep(SLEEP_MS / 1000)
    if RECORD_KEY and event_id:
        _redis().sadd(RECORD_KEY, event_id)


@wa.on_message()
def on_message(message: Message, ctx: EventContext) -> None:
    _handle(message.id, ctx)


@wa.on_status()
def on_status(status: Status, ctx: EventContext) -> None:
    _handle(status.id, ctx)
