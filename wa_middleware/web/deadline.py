"""Deadlines for blocks of async code, with no timer of their own.

The request path bounds two awaits per delivery (the body, the write to Redis). ``asyncio.timeout``
arms a loop timer for each; on Python 3.11 entering and leaving one took 8.9 us of CPU (a
Python-level state machine plus the timer), and even a bare ``call_later`` and ``cancel`` took
2 us, about 7,000 instructions, measured with uvloop: together a tenth of a whole delivery's path.
Here each event loop has one clock instead, a timer that ticks every `TICK` seconds while a
deadline is armed and fires those that passed; arming and disarming a deadline is a set insert
and removal. A deadline therefore fires up to `TICK` late, which the bounds it serves (seconds)
do not notice.

Firing cancels the task; leaving the block turns that cancellation, and only that one, into
`TimeoutError`, as ``asyncio.timeout`` does, by counting the task's cancel requests. Python 3.11+
(it needs ``Task.uncancel``); the callers keep ``asyncio.wait_for`` for 3.10.
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType
from typing import Any

__all__ = ["TICK", "deadline"]

#: Seconds between two looks at the armed deadlines (only while one is armed).
TICK = 0.05


class _Clock:
    """The armed deadlines of one event loop and the timer that ticks while there are some.

    It holds no reference to its loop (the table of clocks is keyed by the loop, weakly): the
    running timer's handle passes the loop along.
    """

    __slots__ = ("__weakref__", "armed", "ticking")

    def __init__(self) -> None:
        self.armed: set[deadline] = set()
        self.ticking = False

    def tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for item in [item for item in self.armed if item.when <= now]:
            self.armed.discard(item)
            item.fire()
        self.ticking = bool(self.armed)
        if self.ticking:
            loop.call_later(TICK, self.tick, loop)


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clock] = weakref.WeakKeyDictionary()
#: The last loop asked for (weakly) and its clock: one loop serves nearly every request of a process.
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], _Clock] | None = None


def _clock(loop: asyncio.AbstractEventLoop) -> _Clock:
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = _Clock()
    _last = (weakref.ref(loop), clock)
    return clock


class deadline:
    """``with deadline(seconds): await ...`` raises `TimeoutError` when the block is not done in time
    (give or take `TICK`).

    A synchronous context manager: arming and disarming needs no await.
    """

    __slots__ = ("_cancelling", "_clock", "_fired", "_seconds", "_task", "when")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._fired = False

    def __enter__(self) -> deadline:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("deadline() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.when = loop.time() + self._seconds
        self._clock = clock = _clock(loop)
        clock.armed.add(self)
        if not clock.ticking:
            clock.ticking = True
            loop.call_later(TICK, clock.tick, loop)
        return self

    def fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any:
        self._clock.armed.discard(self)
        # Fired: the task was cancelled by us. If it ended with that cancellation and nobody else
        # asked for one meanwhile, it is our timeout; otherwise the cancellation is someone else's.
        if self._fired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from None
        return None
