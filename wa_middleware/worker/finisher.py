"""FINISH calls: the records of the worker threads of one process, coalesced into script calls.

Each record is fenced and idempotent on its own in the script, so a call retried after a lost reply
is safe, and records of different threads can share a call. A thread that has records to finish
while a call is out queues them; when that call returns, the first thread to look sends everything
queued by then in one call, for all of them. Each thread still waits for its own records to be
applied before it runs anything more, so what a killed worker runs again is still bounded per
thread (`dispatch.BATCH`). Under load this turns the partial calls that end the threads' work items
(a conversation's deliveries, the followers found by then) into full ones: a call costs the worker
about as much as the records it carries (redis-py's command path, the round trip, the reply), so
fewer calls are cheaper. Idle, a thread finds no call out and sends its own at once: no wait.

An earlier leader/follower hand-over, when every delivery had a FINISH call of its own, measured
slower (1,900 against 2,600 deliveries/s): with ``appendfsync always`` Redis already writes the
calls of one event-loop turn with one fsync. What it saves now is the worker's per-call cost."""

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
#: How often a waiting thread looks again without being woken: should the thread sending a call have
#: left without saying so, the next one sends instead.
RECHECK_S = 1.0


class _Submission:
    """One thread's records, queued for a call."""

    __slots__ = ("error", "records", "result", "served")

    def __init__(self, records: list[tuple[str, str, int, Ops]]) -> None:
        self.records = records
        self.result: list[list[Any]] | None = None
        self.error: BaseException | None = None
        self.served = False


class Finisher:
    """Sends FINISH for lists of (redis id, broker id, take, operations) records, coalescing the
    lists that the worker threads submit while a call is out.

    No thread hands anything to another: a thread whose records are not served finds either a call
    out (it waits) or none (it sends what is queued), so one that leaves at any point (an exception
    raised into it, such as dramatiq's time limit) leaves at most its records queued, sent with the
    next call.

    :param lease: the process's lease (its scripts, and Redis calls retried until Redis answers).
    :param keys: the key layout.
    :param ttl_ms: the once-per-event window, ms.
    """

    def __init__(self, lease: Lease, keys: KeyLayout, ttl_ms: str) -> None:
        self.lease = lease
        self.keys = keys
        self.ttl_ms = ttl_ms
        self._changed = threading.Condition(threading.Lock())
        self._queue: list[_Submission] = []
        #: A call is out.
        self._out = False

    def finish(self, records: list[tuple[str, str, int, Ops]]) -> list[list[Any]] | None:
        """One result per record (``["ok", head, data, ahead, ...]``, ``["again"]`` or ``["gone"]``), or
        None when the worker stops while Redis stays out of reach. A record's ``take``: how many units
        of a lane it moves on it may hand over to this process (0: none, the next head is queued)."""
        mine = _Submission(records)
        with self._changed:
            self._queue.append(mine)
        while True:
            with self._changed:
                while self._out and not mine.served:
                    self._changed.wait(RECHECK_S)
                if mine.served:
                    break
                taken, count = 0, 0
                for submission in self._queue:
                    if taken and count + len(submission.records) > CALL_LIMIT:
                        break
                    taken, count = taken + 1, count + len(submission.records)
                batch, self._queue = self._queue[:taken], self._queue[taken:]
                self._out = True
            self._send(batch, mine)
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _send(self, batch: list[_Submission], sender: _Submission) -> None:
        """One call for ``batch``; its results handed out. If the call raised, the error is the
        sending thread's alone: the other submissions go back to the head of the queue, to be sent
        again (a record applied already comes back "again")."""
        results: list[list[Any]] | None = None
        error: BaseException | None = None
        try:
            results = self._call([record for submission in batch for record in submission.records])
        except BaseException as exc:
            error = exc
        finally:
            with self._changed:
                if error is None:
                    start = 0
                    for submission in batch:
                        end = start + len(submission.records)
                        submission.result = results[start:end] if results is not None else None
                        submission.served = True
                        start = end
                else:
                    sender.error, sender.served = error, True
                    if sender in self._queue:
                        self._queue.remove(sender)
                    self._queue[:0] = [submission for submission in batch if submission is not sender]
                self._out = False
                self._changed.notify_all()

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
