"""FINISH calls: the records of the worker threads of one process, coalesced into script calls.

Each record is fenced and idempotent on its own in the script, so a call retried after a lost reply
is safe, and records of different threads can share a call. A thread that has records to finish
while a call is out queues them; when that call returns, the first thread queued sends everything
queued by then in one call, for all of them. Each thread still waits for its own records to be
applied before it runs anything more, so what a killed worker runs again is still bounded per
thread (`dispatch.BATCH`). Under load this turns the partial calls that end the threads' work items
(a conversation's deliveries, the followers found by then) into full ones: a call costs the worker
about as much as the records it carries (redis-py's command path, the round trip, the reply), so
fewer calls are cheaper. Idle, a thread finds no call out and sends its own at once: no wait.

An earlier leader/follower hand-over, when every delivery had a FINISH call of its own, measured
slower (1,900 against 2,600 deliveries/s): with ``appendfsync always`` Redis already writes the
calls of one event-loop turn with one fsync. What it saves now is the worker's per-call cost.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..keys import KeyLayout
from .finish import Ops, finish_message
from .lease import Lease
from .scripts import finish_keys

__all__ = ["Finisher"]

#: Records one coalesced call carries at most (the threads' submissions are never split).
CALL_LIMIT = 128


class _Submission:
    """One thread's records, queued for a call; ``wake`` is held until it is served or promoted."""

    __slots__ = ("error", "records", "result", "served", "wake")

    def __init__(self, records: list[tuple[str, str, int, Ops]]) -> None:
        self.records = records
        self.result: list[list[Any]] | None = None
        self.error: BaseException | None = None
        self.served = False
        self.wake = threading.Lock()
        self.wake.acquire()


class Finisher:
    """Sends FINISH for lists of (redis id, broker id, take, operations) records, coalescing the
    lists that the worker threads submit while a call is out.

    :param lease: the process's lease (its scripts, and Redis calls retried until Redis answers).
    :param keys: the key layout.
    :param ttl_ms: the once-per-event window, ms.
    """

    def __init__(self, lease: Lease, keys: KeyLayout, ttl_ms: str) -> None:
        self.lease = lease
        self.keys = keys
        self.ttl_ms = ttl_ms
        self._lock = threading.Lock()
        self._queue: list[_Submission] = []
        self._busy = False

    def finish(self, records: list[tuple[str, str, int, Ops]]) -> list[list[Any]] | None:
        """One result per record (``["ok", head, data, ahead, ...]``, ``["again"]`` or ``["gone"]``), or
        None when the worker stops while Redis stays out of reach. A record's ``take``: how many units
        of a lane it moves on it may hand over to this process (0: none, the next head is queued)."""
        mine = _Submission(records)
        with self._lock:
            self._queue.append(mine)
            lead = not self._busy
            self._busy = True
        try:
            if not lead:
                mine.wake.acquire()  # served by another thread's call, or promoted to send the next one
        finally:
            # Promoted, the thread sends the next call even if an exception reached it meanwhile
            # (dramatiq's time limit): the threads queued behind it must not wait for ever.
            if not mine.served:
                self._lead()
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _lead(self) -> None:
        """Send one call for what is queued (this thread's submission first), hand the results out,
        and promote the next thread queued, if any, to send the next call."""
        with self._lock:
            taken, count = 0, 0
            for submission in self._queue:
                if taken and count + len(submission.records) > CALL_LIMIT:
                    break
                taken, count = taken + 1, count + len(submission.records)
            batch, self._queue = self._queue[:taken], self._queue[taken:]
        results: list[list[Any]] | None = None
        error: BaseException | None = None
        try:
            results = self._call([record for submission in batch for record in submission.records])
        except BaseException as exc:
            error = exc
        finally:
            self._hand_out(batch, results, error)

    def _hand_out(self, batch: list[_Submission], results: list[list[Any]] | None, error: BaseException | None) -> None:
        """Give each submission of a call its results. If the call raised, the error is the sending
        thread's alone: the other submissions go back to the head of the queue, to be sent again (a
        record applied already comes back "again")."""
        served = batch if error is None else batch[:1]
        if error is not None:
            batch[0].error = error
        else:
            start = 0
            for submission in batch:
                end = start + len(submission.records)
                submission.result = results[start:end] if results is not None else None
                start = end
        with self._lock:
            for submission in served:
                submission.served = True
            self._queue[:0] = batch[len(served) :]
            if self._queue:
                self._queue[0].wake.release()  # promoted: it sends the next call
            else:
                self._busy = False
        for submission in served[1:]:
            submission.wake.release()

    def _call(self, records: list[tuple[str, str, int, Ops]]) -> list[list[Any]] | None:
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
