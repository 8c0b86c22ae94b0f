"""Sends per second from one process through a local stand-in API: measured and printed, never asserted.

The stand-in runs in a process of its own so that the process measured, like one worker process,
has its interpreter to itself. What is asserted is only that every send arrived exactly once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from wa_middleware.messaging import AsyncClient, Client, Dialog360, RateLimiter, Replies, SendLedger

from .conftest import NUMBER, USER

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def remote_standin() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.messaging.standin"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def received(url: str) -> int:
    return int(httpx.get(f"{url}/__count").json()["requests"])


def measure(count: int, threads: int, send: Callable[[int], object]) -> float:
    started = time.perf_counter()
    if threads == 1:
        for i in range(count):
            send(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(send, range(count)))
    return count / (time.perf_counter() - started)


def test_sends_per_second_from_one_process(
    remote_standin: str, redis_client: redis.Redis, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = remote_standin
    rows: list[tuple[str, int, float]] = []
    with Client(Dialog360("key", url, phone_number_id=NUMBER)) as client:
        client.send_text(USER, "warm-up")
        rows.append(("Client.send_text, 1 thread", 1000, measure(1000, 1, lambda i: client.send_text(USER, "x"))))
        rows.append(("Client.send_text, 8 threads", 2000, measure(2000, 8, lambda i: client.send_text(USER, "x"))))

        ledger = SendLedger(redis_client, prefix=prefix, ttl=60)

        def reply(i: int) -> object:
            return Replies(client, ledger, f"m:wamid.{i}|bench", NUMBER, USER, f"wamid.{i}").reply("x")

        rows.append(("Replies.reply + ledger, 8 threads", 2000, measure(2000, 8, reply)))
        # Every unit again: all replayed from the ledger, nothing sent.
        rows.append(("  the same units again (replayed)", 2000, measure(2000, 8, reply)))

    limiter = RateLimiter(redis_client, per_second=500, prefix=prefix)
    with Client(Dialog360("key", url, phone_number_id=NUMBER), rate_limiter=limiter) as limited:
        rows.append(
            ("Client, 8 threads, shared limit 500/s", 1000, measure(1000, 8, lambda i: limited.send_text(USER, "x")))
        )

    async def concurrent(count: int, width: int) -> float:
        async with AsyncClient(Dialog360("key", url)) as api:
            gate = asyncio.Semaphore(width)

            async def one() -> None:
                async with gate:
                    await api.send_text(USER, "x")

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(count)))
            return count / (time.perf_counter() - started)

    rows.append(("AsyncClient.send_text, 4 at a time", 1000, asyncio.run(concurrent(1000, 4))))

    sent = 1 + 1000 + 2000 + 2000 + 1000 + 1000
    assert received(url) == sent  # every send arrived once; the replayed units sent nothing
    with capsys.disabled():
        print("\n\nsends/s through a local stand-in API (one client process, stand-in in another):")
        for name, count, rate in rows:
            print(f"  {name:<40} {count:>5} sends  {rate:>7.0f}/s")
