"""The request path's deadlines: one clock per loop, a cancellation turned into TimeoutError only
when it is the deadline's own. No test asserts how long anything took."""

from __future__ import annotations

import asyncio
import sys

import pytest

from wa_middleware.web import deadline as deadline_module
from wa_middleware.web.deadline import deadline

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.uncancel is 3.11+")


def clock() -> deadline_module._Clock:
    return deadline_module._clock(asyncio.get_running_loop())


async def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        with deadline(0.01):
            await asyncio.sleep(30)
    assert not clock().armed
    await asyncio.sleep(0)  # the task is not left cancelled: it goes on
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_block_done_in_time_leaves_nothing_armed() -> None:
    with deadline(30):
        await asyncio.sleep(0)
    assert not clock().armed
    # With nothing armed the clock stops after its next tick.
    await asyncio.sleep(deadline_module.TICK * 3)
    assert not clock().ticking


async def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    async def guarded() -> None:
        with deadline(30):
            await asyncio.sleep(30)

    task = asyncio.ensure_future(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not clock().armed


async def test_many_blocks_share_one_clock_and_each_fires_alone() -> None:
    async def one(seconds: float) -> str:
        try:
            with deadline(seconds):
                await asyncio.sleep(0.3)
        except TimeoutError:
            return "timeout"
        return "done"

    results = await asyncio.wait_for(asyncio.gather(*(one(s) for s in (0.01, 30, 0.01, 30))), 10)
    assert results == ["timeout", "done", "timeout", "done"]
    assert not clock().armed


async def test_nested_the_inner_deadline_is_the_inner_blocks() -> None:
    with deadline(30):
        with pytest.raises(TimeoutError):
            with deadline(0.01):
                await asyncio.sleep(30)
        await asyncio.sleep(0)  # the outer block goes on
    assert not clock().armed


def test_one_clock_per_loop_and_loops_are_not_kept_alive() -> None:
    import gc
    import weakref

    refs = []
    for _ in range(3):
        loop = asyncio.new_event_loop()

        async def use() -> None:
            with deadline(1):
                await asyncio.sleep(0)

        loop.run_until_complete(use())
        refs.append(weakref.ref(loop))
        loop.close()
        del loop
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_outside_a_running_loop_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        with deadline(1):
            pass
