"""Stock dramatiq with a no-op actor: the yardstick a wa-middleware worker process must match."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["WA_BROKER_URL"], namespace=os.environ["WA_NAMESPACE"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="wa_middleware", actor_name="noop")
def noop(*args: object) -> None:
    pass
