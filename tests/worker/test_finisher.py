"""The FINISH coalescer: worker threads' records queued while a call is out share the next call.

The script side of a coalesced call (several messages' records, each fenced on its own) is tested in
``test_scripts.py`` (``finish_many``); the real worker's threads use it in every worker test. Here the
call itself is replaced, to hold it open and to make it fail at will.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from wa_middleware.keys import KeyLayout
from wa_middleware.worker import finisher as finisher_module
from wa_middleware.worker.finish import Ops
from wa_middleware.worker.finisher import Finisher

Record = tuple[str, str, int, Ops]


class _Held(Finisher):
    """A Finisher whose calls are recorded, can be held open, and fail for chosen records."""

    def __init__(self) -> None:
        super().__init__(lease=None, keys=KeyLayout(namespace="t"), ttl_ms="1000")  # type: ignore[arg-type]
        self.calls: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail: set[str] = set()

    def _call(self, records: list[Record]) -> list[list[Any]] | None:
        rids = [rid for rid, _, _, _ in records]
        self.calls.append(rids)
        self.entered.set()
        self.hold.wait(10)
        if self.fail & set(rids):
            raise RuntimeError(f"call failed: {sorted(self.fail & set(rids))}")
        return [["ok", rid] for rid in rids]


def _records(*rids: str) -> list[Record]:
    return [(rid, "bid", 0, Ops()) for rid in rids]


def _submit(finisher: Finisher, rids: tuple[str, ...], out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            out[rids[0]] = finisher.finish(_records(*rids))
        except Exception as exc:
            out[rids[0]] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _queued(finisher: Finisher, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(finisher._queue) < count:
        assert time.monotonic() < deadline, "the submissions never queued"
        time.sleep(0.001)


def _behind_a_held_call(finisher: _Held, *queued: tuple[str, ...], gone: tuple[str, ...] = ()) -> dict[str, Any]:
    """Hold a first call (``a1``'s) open, queue each of ``queued`` behind it in turn (after the records
    ``gone`` of a thread that has left, if any), release it: each thread's results by its first rid,
    once every thread has finished."""
    finisher.hold.clear()
    out: dict[str, Any] = {}
    threads = [_submit(finisher, ("a1",), out)]
    assert finisher.entered.wait(5)
    if gone:
        finisher._queue.append(finisher_module._Submission(_records(*gone)))
    for rids in queued:
        threads.append(_submit(finisher, rids, out))
        _queued(finisher, len(threads) - 1 + bool(gone))
    finisher.hold.set()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    return out


def test_a_thread_alone_sends_its_own_call_at_once() -> None:
    finisher = _Held()
    assert finisher.finish(_records("a1", "a2")) == [["ok", "a1"], ["ok", "a2"]]
    assert finisher.calls == [["a1", "a2"]]
    assert not finisher._out and not finisher._queue


def test_records_queued_while_a_call_is_out_share_the_next_call() -> None:
    finisher = _Held()
    out = _behind_a_held_call(finisher, ("b1", "b2"), ("c1",), ("d1", "d2", "d3"))
    assert finisher.calls[0] == ["a1"]
    # The three queued behind it went in one call, in the order they queued; each got its own results.
    assert sorted(finisher.calls[1]) == ["b1", "b2", "c1", "d1", "d2", "d3"] and len(finisher.calls) == 2
    assert out["a1"] == [["ok", "a1"]]
    assert out["b1"] == [["ok", "b1"], ["ok", "b2"]]
    assert out["c1"] == [["ok", "c1"]]
    assert out["d1"] == [["ok", "d1"], ["ok", "d2"], ["ok", "d3"]]
    assert not finisher._out and not finisher._queue


def test_a_failed_call_fails_its_sender_alone_and_the_others_are_sent_again() -> None:
    """The records of the threads that shared a failed call go out again in the next call (a record
    applied already comes back "again" from the script): only the thread that sent it sees the error."""

    class _FailsSecond(_Held):
        def _call(self, records: list[Record]) -> list[list[Any]] | None:
            result = super()._call(records)
            if len(self.calls) == 2:
                raise RuntimeError("the second call failed")
            return result

    finisher = _FailsSecond()
    out = _behind_a_held_call(finisher, ("b1",), ("c1",))
    assert out["a1"] == [["ok", "a1"]]
    assert finisher.calls[:2] == [["a1"], ["b1", "c1"]]
    # One of the two sent the failed call and got its error; the other's records went out again.
    failed = [rid for rid in ("b1", "c1") if isinstance(out[rid], RuntimeError)]
    assert len(failed) == 1
    (other,) = {"b1", "c1"} - set(failed)
    assert out[other] == [["ok", other]]
    assert finisher.calls[2:] == [[other]]
    assert not finisher._out and not finisher._queue


def test_a_thread_that_leaves_while_waiting_holds_up_no_one() -> None:
    """A thread that leaves while its records wait (an exception raised into it, such as dramatiq's
    time limit) leaves them queued: they go out with the next call, and nobody waits for that thread."""
    finisher = _Held()
    out = _behind_a_held_call(finisher, ("b1",), gone=("gone1",))  # queued by a thread since gone
    assert finisher.calls == [["a1"], ["gone1", "b1"]]
    assert out["b1"] == [["ok", "b1"]]
    assert not finisher._out and not finisher._queue


def test_a_call_carries_at_most_call_limit_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finisher_module, "CALL_LIMIT", 4)
    finisher = _Held()
    out = _behind_a_held_call(finisher, ("b1", "b2", "b3"), ("c1", "c2"), ("d1",))
    # b's 3 records, then c's 2 would make 5 > 4: c and d go in the next call. A submission is never split.
    assert finisher.calls == [["a1"], ["b1", "b2", "b3"], ["c1", "c2", "d1"]]
    assert out["c1"] == [["ok", "c1"], ["ok", "c2"]] and out["d1"] == [["ok", "d1"]]


def test_a_call_that_gives_up_gives_every_thread_none() -> None:
    """Stopping with Redis out of reach (the lease's call gives up): every thread of that call gets None,
    as the one that sent it does (their messages stay taken; recovery requeues them)."""

    class _GivesUp(_Held):
        def _call(self, records: list[Record]) -> list[list[Any]] | None:
            super()._call(records)
            return None if len(self.calls) > 1 else [["ok", r[0]] for r in records]

    finisher = _GivesUp()
    out = _behind_a_held_call(finisher, ("b1",), ("c1",))
    assert out == {"a1": [["ok", "a1"]], "b1": None, "c1": None}
