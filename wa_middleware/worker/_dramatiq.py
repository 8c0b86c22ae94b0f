"""The private pieces of dramatiq this package relies on, gathered in one place.

Each is checked by ``tests/worker/test_dramatiq_contract.py`` against the lowest and the highest
release ``pyproject.toml`` allows (``dramatiq>=1.17,<2.3``); a release that changes one of them fails
that test instead of silently turning off crash recovery.

* ``dramatiq.brokers.redis._RedisConsumer``: the planning consumer subclasses it and overrides
  ``__next__`` (a copy of dramatiq's loop, 1.17.0 to 2.2.1) and ``_fetch``; it relies on the
  attributes ``message_cache``, ``misses``, ``prefetch``, ``outstanding_message_count``,
  ``queued_message_ids``, ``queue_name``, ``timeout`` and ``broker``.
* ``RedisBroker.scripts["dispatch"]``: dramatiq's one Lua script, called with a command it does not
  know: it then only heartbeats and, with the maintenance flag, requeues the messages of dead
  workers. Its ARGV order is dramatiq's (command, timestamp, queue, broker id, heartbeat timeout,
  dead message ttl, do maintenance, max unpack size) and ``KEYS[1]`` the namespace.
* ``RedisBroker._max_unpack_size()``: the script's batch size limit.
* Public, but relied on in their exact shape: ``RedisBroker.consumer_class`` being what
  ``consume()`` instantiates, ``RedisBroker.do_fetch`` (other queues' fetch) and
  ``dramatiq.common.compute_backoff(misses, max_backoff=...)``.
"""

from __future__ import annotations

import time
from typing import Any

from dramatiq.brokers.redis import _RedisConsumer

__all__ = ["CONSUMER_ATTRIBUTES", "RedisConsumer", "maintain"]

RedisConsumer = _RedisConsumer

#: The consumer attributes the planning consumer reads or writes.
CONSUMER_ATTRIBUTES = (
    "message_cache",
    "misses",
    "prefetch",
    "outstanding_message_count",
    "queued_message_ids",
    "queue_name",
    "timeout",
    "broker",
)


def maintain(broker: Any, queue_name: str) -> Any:
    """Heartbeat ``broker`` and requeue the unacked messages of dead workers on ``queue_name``."""
    return broker.scripts["dispatch"](
        args=[
            "wa-maintenance",  # an unknown command: the script only heartbeats and maintains
            int(time.time() * 1000),
            queue_name,
            broker.broker_id,
            broker.heartbeat_timeout,
            broker.dead_message_ttl,
            1,
            broker._max_unpack_size(),
        ],
        keys=[broker.namespace],
    )
