"""FINISH calls: the records of one or several messages, in one script call.

Each record is fenced and idempotent on its own in the script, so a call retried after a lost reply
is safe. Concurrent calls from the worker threads are not coalesced here: with ``appendfsync
always`` Redis already writes the calls of one event-loop turn with one fsync (measured: a
leader/follower hand-over of the threads' records was slower, 1,900 against 2,600 deliveries/s).
What brings many messages into one call is a batch: the deliveries a fetch took under load, run by
one thread (`Dispatcher.run_batch`).
"""

from __future__ import annotations

import time
from typing import Any

from ..keys import KeyLayout
from .finish import Ops, finish_message
from .lease import Lease
from .scripts import finish_keys

__all__ = ["Finisher"]


class Finisher:
    """Sends FINISH for a list of (redis id, broker id, take, operations) records.

    :param lease: the process's lease (its scripts, and Redis calls retried until Redis answers).
    :param keys: the key layout.
    :param ttl_ms: the once-per-event window, ms.
    """

    def __init__(self, lease: Lease, keys: KeyLayout, ttl_ms: str) -> None:
        self.lease = lease
        self.keys = keys
        self.ttl_ms = ttl_ms

    def finish(self, records: list[tuple[str, str, int, Ops]]) -> list[list[Any]] | None:
        """One result per record (``["ok", head, data, ahead, ...]``, ``["again"]`` or ``["gone"]``), or
        None when the worker stops while Redis stays out of reach. A record's ``take``: how many units
        of a lane it moves on it may hand over to this process (0: none, the next head is queued)."""
        k = self.keys
        keys = finish_keys(k)
        args: list[Any] = [int(time.time() * 1000), self.ttl_ms]
        for rid, bid, take, ops in records:
            args += finish_message(rid=rid, acks=k.acks(bid), bid=bid, take=str(take), count=ops.n)
            args += ops
        result = self.lease.call(
            f"finish {len(records)} message(s)", lambda: self.lease.scripts.finish(keys=keys, args=args)
        )
        if result is None:
            return None
        return [[r[0].decode(), *r[1:]] for r in result]
