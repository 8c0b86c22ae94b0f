"""The shared per-number rate limit on real Redis: its schedule, its refusals, and two processes under one limit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio

from wa_middleware.errors import ConfigurationError
from wa_middleware.messaging import AsyncRateLimiter, Client, Dialog360, RateLimited, RateLimiter, Retry
from wa_middleware.messaging.types import Text

from .conftest import KEY, NUMBER, USER
from .standin import StandIn


def test_slots_are_spaced_by_the_rate(redis_client: redis.Redis, prefix: str) -> None:
    limiter = RateLimiter(redis_client, per_second=100, prefix=prefix)
    calls = []
    for _ in range(20):
        before = time.monotonic()
        wait = limiter.reserve(NUMBER, max_wait=10)
        calls.append((before, wait, time.monotonic()))
    assert calls[0][1] == 0
    first = calls[0][0]
    for i, (before, wait, after) in enumerate(calls):
        assert wait is not None
        # The i-th slot is 10 ms after the previous one, on Redis's clock: within the call's own duration.
        slot = before + wait
        assert abs(slot - (first + i * 0.01)) <= (after - before) + (calls[0][2] - first) + 0.001, (i, wait)


def test_a_burst_goes_through_at_once(redis_client: redis.Redis, prefix: str) -> None:
    limiter = RateLimiter(redis_client, per_second=10, burst=5, prefix=prefix)
    waits = [limiter.reserve(NUMBER, max_wait=10) for _ in range(6)]
    assert waits[:5] == [0, 0, 0, 0, 0]
    assert waits[5] is not None and 0.05 < waits[5] <= 0.1


def test_a_refusal_reserves_nothing(redis_client: redis.Redis, prefix: str) -> None:
    limiter = RateLimiter(redis_client, per_second=1, prefix=prefix)
    assert limiter.reserve(NUMBER, max_wait=0) == 0
    assert limiter.reserve(NUMBER, max_wait=0.2) is None
    assert limiter.reserve(NUMBER, max_wait=0.2) is None
    wait = limiter.reserve(NUMBER, max_wait=5)
    assert wait is not None and 0.9 < wait <= 1.0  # the refusals took no slot


def test_numbers_are_apart_and_may_have_their_own_rate(redis_client: redis.Redis, prefix: str) -> None:
    limiter = RateLimiter(redis_client, per_second=1, per_number={"fast": 1000}, prefix=prefix)
    assert limiter.reserve("a", max_wait=0) == 0
    assert limiter.reserve("b", max_wait=0) == 0
    assert limiter.reserve("fast", max_wait=0) == 0
    second = limiter.reserve("fast", max_wait=0.01)
    assert second is not None and second <= 0.001


def test_an_idle_numbers_key_expires(redis_client: redis.Redis, prefix: str) -> None:
    limiter = RateLimiter(redis_client, per_second=10, prefix=prefix)
    limiter.reserve(NUMBER, max_wait=1)
    assert 0 < redis_client.pttl(limiter.key(NUMBER)) <= 1200


@pytest.mark.parametrize("kwargs", [{"per_second": 0}, {"burst": 0}, {"per_number": {"x": -1}}])
def test_the_limits_are_checked(redis_client: redis.Redis, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter(redis_client, **kwargs)  # type: ignore[arg-type]


def test_the_client_queues_for_slots_and_refuses_past_its_budget(
    standin: StandIn, redis_client: redis.Redis, prefix: str
) -> None:
    limiter = RateLimiter(redis_client, per_second=2, prefix=prefix)
    with Client(Dialog360(KEY, standin.url), rate_limiter=limiter, retry=Retry(budget=2)) as client:
        started = time.monotonic()
        client.send_text(USER, "1", phone_number_id=NUMBER)
        client.send_text(USER, "2", phone_number_id=NUMBER)  # waits half a second for its slot
        assert 0.4 < time.monotonic() - started < 1.5
        client.mark_read("wamid.IN", phone_number_id=NUMBER)  # not a message: not limited
        with pytest.raises(RateLimited) as caught:
            client.send(USER, Text(body="3"), phone_number_id=NUMBER, budget=0.2)
    assert caught.value.retryable
    assert len(standin.sends()) == 2


async def test_the_async_limiter_shares_the_schedule(redis_url: str, redis_client: redis.Redis, prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    sync = RateLimiter(redis_client, per_second=10, prefix=prefix)
    limiter = AsyncRateLimiter(client, per_second=10, prefix=prefix)
    assert sync.reserve(NUMBER, max_wait=1) == 0
    wait = await limiter.reserve(NUMBER, max_wait=1)
    assert wait is not None and 0.05 < wait <= 0.1
    await client.aclose()


SENDER = textwrap.dedent(
    """
    import sys, time
    import redis
    from wa_middleware.messaging import Client, Dialog360, RateLimiter, Retry

    api_url, redis_url, prefix, count, rate, start_at = sys.argv[1:]
    limiter = RateLimiter(redis.Redis.from_url(redis_url), per_second=float(rate), prefix=prefix)
    with Client(Dialog360("key", api_url), rate_limiter=limiter, retry=Retry(budget=30)) as client:
        time.sleep(max(0.0, float(start_at) - time.time()))  # both processes start together
        for i in range(int(count)):
            client.send_text("4915112345678", str(i), phone_number_id="PNID")
    """
)


def test_two_processes_share_one_limit(tmp_path: Path, standin: StandIn, redis_url: str, prefix: str) -> None:
    rate, each = 40, 20
    path = tmp_path / "sender.py"
    path.write_text(SENDER)
    start_at = time.time() + 1.5  # past both interpreters' start-up
    procs = [
        subprocess.Popen(
            [sys.executable, str(path), standin.url, redis_url, prefix, str(each), str(rate), str(start_at)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    times = sorted(r.at for r in standin.sends())
    assert len(times) == 2 * each
    # Unlimited, 40 sends to a local server take a few milliseconds; at 40/s they span about a second.
    assert times[-1] - times[0] >= (2 * each - 1) / rate * 0.9
    window, allowed = 0.25, int(0.25 * rate) + 3  # + the window's two edges, + arrival jitter
    busiest = max(sum(1 for t in times if start <= t < start + window) for start in times)
    assert busiest <= allowed, (busiest, allowed)
