"""Stock dramatiq: a no-op actor on a plain ``RedisBroker`` with dramatiq's default JSON
encoder, to put wa-middleware's worker throughput next to dramatiq's own."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from ._settings import NAMESPACE, REDIS_URL

QUEUE = "stock"

broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(body: str) -> None:
    """Does nothing: the figure is dramatiq's own per-message cost."""
