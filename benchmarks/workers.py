"""The worker side: callbacks completed per second per worker process, and the lag from the
200 to the callback start.

Throughput: preload N deliveries into the queue through the real middleware (no worker
running), start ``wa-middleware worker MODULE:wa -p 1 -t 8``, and time from the first
acknowledged message to an empty queue (dramatiq deletes a message body from the queue's
hash when it acks it, so ``HLEN`` of that hash counts what is left). Boot time is excluded.
Stock dramatiq runs the same drain with a no-op actor, for the ratio.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis

from .servers import WorkerProcess

__all__ = ["drain_rate", "lag_figures", "preload_stock", "queue_hash", "wait_consuming"]


def queue_hash(namespace: str, queue: str) -> str:
    """The hash in which dramatiq's Redis broker keeps a queue's message bodies until acked."""
    return f"{namespace}:{queue}.msgs"


def drain_rate(
    url: str, hash_key: str, worker_args: list[str], env: dict[str, str], log_path: Path, timeout: float
) -> dict[str, Any]:
    """Start a worker and time how fast it empties ``hash_key``; returns figures for results.json."""
    client = redis.Redis.from_url(url)
    total = int(client.hlen(hash_key))
    worker = WorkerProcess(worker_args, env, log_path)
    started = time.monotonic()
    first: float | None = None
    left = total
    try:
        deadline = started + timeout
        while time.monotonic() < deadline:
            left = int(client.hlen(hash_key))
            now = time.monotonic()
            if first is None and left < total:
                first = now
            if left == 0:
                break
            if not worker.running():
                break
            time.sleep(0.002)
        end = time.monotonic()
    finally:
        worker.stop()
        client.close()
    done = total - left
    elapsed = end - first if first is not None else 0.0
    return {
        "messages": total,
        "completed": done,
        "seconds": round(elapsed, 4),
        "boot_seconds": round((first or end) - started, 3),
        # The first ack opens the clock, so it is not counted in the rate.
        "per_second": round((done - 1) / elapsed, 1) if elapsed > 0 and done > 1 else 0.0,
        "timed_out": left > 0,
        "command": " ".join(worker_args),
    }


def wait_consuming(url: str, namespace: str, worker: WorkerProcess, timeout: float = 30.0) -> float:
    """Block until a dramatiq worker has fetched from Redis once (its heartbeat appears); returns seconds.

    The caller cleans the namespace first, so an old worker's heartbeat cannot answer for it.
    """
    client = redis.Redis.from_url(url)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout and worker.running():
            if client.zcard(f"{namespace}:__heartbeats__"):
                break
            time.sleep(0.02)
    finally:
        client.close()
    return time.monotonic() - started


def preload_stock(count: int, body: str) -> None:
    """Enqueue ``count`` messages with stock dramatiq's own ``send`` (run in this process)."""
    from .contenders import dramatiq_stock

    for _ in range(count):
        dramatiq_stock.noop.send(body)
    dramatiq_stock.broker.client.close()


def lag_figures(url: str, key: str) -> dict[str, Any]:
    """p50/p99 of the lags the callbacks pushed to ``key`` (ms, from acceptance to callback start)."""
    client = redis.Redis.from_url(url)
    try:
        values = sorted(float(v) for v in client.lrange(key, 0, -1))
    finally:
        client.close()
    if not values:
        return {"samples": 0}

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 2)

    return {"samples": len(values), "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": round(values[-1], 2)}
