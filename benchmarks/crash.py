"""Crash durability, side by side: what happens to acknowledged events when the web process dies.

For each contender: post N single-event deliveries whose handlers take 100 ms, ``kill -9``
the web process the moment the last 200 arrives, restart it, and count how many of the
events whose delivery was answered 200 were ever handled. The sender will never redeliver
an event it got a 200 for, so every one not handled is lost for good.

wa-middleware answers 200 only once the delivery is in Redis; a real
``wa-middleware worker`` started after the restart handles it. pywa answers 200 and then
runs the handlers as an in-process background task, so whatever is in flight dies with the
process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from .payloads import Delivery, auth_header, make_deliveries, signature_header

__all__ = ["CrashOutcome", "post_then_kill", "single_event_deliveries"]


@dataclass
class CrashOutcome:
    contender: str
    posted: int
    acknowledged: int
    handled: int
    lost: int
    kill_delay_ms: float
    notes: str = ""

    def asdict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def single_event_deliveries(count: int, seed: int = 7) -> list[Delivery]:
    """Deliveries carrying one event each, in the 1:3 mix.

    One event per delivery keeps the count comparable: pywa hands only the first status of a
    multi-status delivery to its handlers, which would look like a loss that is not a crash's.
    """
    out: list[Delivery] = []
    for delivery in make_deliveries(count * 3, seed=seed):
        if len(delivery.event_ids) == 1:
            out.append(delivery)
        elif delivery.kind == "status":
            # Keep only the first status: rebuild the body around it.
            out.append(_first_status_only(delivery))
        if len(out) == count:
            break
    return out


def _first_status_only(delivery: Delivery) -> Delivery:
    import json

    body = json.loads(delivery.body)
    value = body["entry"][0]["changes"][0]["value"]
    value["statuses"] = value["statuses"][:1]
    value["contacts"] = value["contacts"][:1]
    return Delivery("status", json.dumps(body, separators=(",", ":")).encode(), (value["statuses"][0]["id"],))


async def _post_all(
    port: int, deliveries: list[Delivery], rate: float, connections: int, on_last: Callable[[], None]
) -> list[bool]:
    """Post at a fixed rate; call ``on_last`` synchronously inside the last answer's handling."""
    headers = f"Authorization: {auth_header()}\r\nX-Hub-Signature-256: {signature_header()}\r\n"
    acked = [False] * len(deliveries)
    remaining = len(deliveries)
    queue: asyncio.Queue[int] = asyncio.Queue()
    start = time.monotonic()

    async def feed() -> None:
        for i in range(len(deliveries)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(i)

    async def connection() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining > 0:
                i = await queue.get()
                body = deliveries[i].body
                writer.write(
                    (
                        f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{headers}"
                        f"Content-Length: {len(body)}\r\n\r\n"
                    ).encode()
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                acked[i] = head.startswith(b"HTTP/1.1 200")
                remaining -= 1
                if remaining == 0:
                    on_last()  # no await between the last 200 and the kill
                    return
        finally:
            writer.close()

    tasks = [asyncio.create_task(connection()) for _ in range(connections)]
    feeder = asyncio.create_task(feed())
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in (*pending, feeder):
        task.cancel()
    await asyncio.gather(*pending, feeder, return_exceptions=True)
    for task in done:
        task.result()
    return acked


def post_then_kill(
    port: int, deliveries: list[Delivery], rate: float, kill: Callable[[], None], connections: int = 8
) -> tuple[list[bool], float]:
    """Post every delivery, ``kill`` right after the last answer; returns (acked flags, kill delay in ms)."""
    stamps: dict[str, float] = {}

    def on_last() -> None:
        stamps["last"] = time.monotonic()
        kill()
        stamps["killed"] = time.monotonic()

    acked = asyncio.run(_post_all(port, deliveries, rate, connections, on_last))
    return acked, (stamps["killed"] - stamps["last"]) * 1000


def count_handled(url: str, key: str, event_ids: set[str]) -> int:
    client = redis.Redis.from_url(url)
    try:
        members = {m.decode() for m in client.smembers(key)}  # type: ignore[union-attr]
    finally:
        client.close()
    return len(members & event_ids)
