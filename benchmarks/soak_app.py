"""The soak's webhook: one Starlette app (served by uvicorn) and the callbacks its workers run.

The callbacks are no-ops that keep two figures without a Redis call each (which would be a cost
the worker does not have in production): how many events they ran, and the lag from the 200 to
their start for one event in ``SOAK_LAG_EVERY``. A thread in each worker process adds them to
Redis every half second (``INCRBY`` and ``RPUSH``): the soak reads them while it runs.
"""

from __future__ import annotations

import os
import threading
import time

import redis
from starlette.applications import Starlette
from wa_middleware.adapters.asgi import WebhookMiddleware

from wa_middleware import BasicAuth, EventContext, Message, Status, Webhook

from .payloads import AUTH_PASSWORD, AUTH_USER

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
NAMESPACE = os.environ.get("BENCH_NAMESPACE", "wasoak")
QUEUE = os.environ.get("BENCH_QUEUE", "soak")
#: Keys the callbacks' figures go to.
COUNT_KEY = f"{NAMESPACE}:soak:ran"
LAG_KEY = f"{NAMESPACE}:soak:lag"
LAG_EVERY = int(os.environ.get("SOAK_LAG_EVERY", "10"))

wa = Webhook(
    auth=BasicAuth(AUTH_USER, AUTH_PASSWORD),
    path="/webhook",
    broker_url=REDIS_URL,
    queue_name=QUEUE,
    namespace=NAMESPACE,
    max_retries=0,
)

app = Starlette()
app.add_middleware(WebhookMiddleware, webhook=wa)

_lock = threading.Lock()
_ran = 0
_lags: list[str] = []
_flusher: threading.Thread | None = None


def _flush_forever() -> None:
    global _ran
    client = redis.Redis.from_url(REDIS_URL)
    while True:
        time.sleep(0.5)
        with _lock:
            ran, _ran = _ran, 0
            lags = _lags[:]
            del _lags[:]
        pipe = client.pipeline(transaction=False)
        if ran:
            pipe.incrby(COUNT_KEY, ran)
        if lags:
            pipe.rpush(LAG_KEY, *lags)
        pipe.execute()


def _handle(ctx: EventContext) -> None:
    global _ran, _flusher
    now = time.time() * 1000
    with _lock:
        if _flusher is None:  # in the worker process, on its first callback
            _flusher = threading.Thread(target=_flush_forever, name="soak-flush", daemon=True)
            _flusher.start()
        _ran += 1
        if _ran % LAG_EVERY == 0 and ctx.received_at is not None:
            _lags.append(f"{time.time():.3f}:{now - ctx.received_at:.2f}")


@wa.on_message()
def on_message(message: Message, ctx: EventContext) -> None:
    _handle(ctx)


@wa.on_status()
def on_status(status: Status, ctx: EventContext) -> None:
    _handle(ctx)


__all__ = ["COUNT_KEY", "LAG_KEY", "app", "wa"]
