"""The private pieces of dramatiq this package relies on, gathered in one place.

Each is checked by ``tests/worker/test_dramatiq_contract.py`` against the lowest and the highest
release ``pyproject.toml`` allows (``dramatiq>=1.17,<2.3``); a release that changes one of them fails
that test instead of silently turning off crash recovery.

* ``dramatiq.brokers.redis._RedisConsumer``: the planning consumer subclasses it and overrides
  ``__next__`` (a copy of dramatiq's loop, 1.17.0 to 2.2.1) and ``_fetch``; it relies on the
  attributes ``message_cache``, ``misses``, ``prefetch``, ``outstanding_message_count``,
  ``queued_message_ids``, ``queue_name``, ``timeout`` and ``broker``.
* Public, but relied on in their exact shape: ``RedisBroker.consumer_class`` being what
  ``consume()`` instantiates, ``RedisBroker.do_fetch`` (other queues' fetch) and
  ``dramatiq.common.compute_backoff(misses, max_backoff=...)``.

dramatiq's own Lua script (heartbeats and maintenance on client clocks) is not used on the
webhook's queue: this package's workers lease, heartbeat and recover with scripts of their own
(`lease.py`), so no private script call is relied on.
"""

from __future__ import annotations

from dramatiq.brokers.redis import _RedisConsumer

__all__ = ["CONSUMER_ATTRIBUTES", "RedisConsumer"]

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
