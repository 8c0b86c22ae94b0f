"""Capacity: how many requests a server answers per second when it is never left waiting.

The open-loop search (`runner._search_max`) asks "up to what rate does p99 stay under 50 ms", and
on a small shared machine one hiccup in a 2-second step moves that answer by a whole step (13 %).
This is the other classic figure, the one ``wrk`` gives: ``connections`` clients each send a
request the moment the previous one is answered, for ``duration`` seconds, and the answers counted
per second are the server's capacity. It needs no threshold and saturates the server the same way
for every contender, so the ratio of two servers measured back to back is steady where the searched
maxima are not; the runner interleaves such bursts over rounds (`runner.run_capacity_rounds`).

The client is one asyncio (uvloop) task per connection on raw streams, HTTP/1.1 with keep-alive,
reconnecting whenever the server closes (gunicorn's sync worker closes after every answer, and
that reconnect is part of what it costs).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Capacity", "measure"]


@dataclass
class Capacity:
    """The outcome of one burst."""

    seconds: float
    answers: Counter[int] = field(default_factory=Counter)
    errors: int = 0

    @property
    def ok_per_second(self) -> float:
        return self.answers[200] / self.seconds if self.seconds else 0.0


def _request(host: str, port: int, path: str, headers: tuple[tuple[str, str], ...], body: bytes) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    head += [f"{name}: {value}" for name, value in headers]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def _client(
    host: str, port: int, requests: list[bytes], offset: int, start: float, end: float, out: Capacity
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    k = offset
    try:
        while time.monotonic() < end:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(requests[k % len(requests)])
                k += 1
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionError("closed before answering")
                status = int(status_line.split(b" ", 2)[1])
                length, close = 0, False
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                if length:
                    await reader.readexactly(length)
                if start <= time.monotonic() < end:
                    out.answers[status] += 1
                if close:
                    writer.close()
                    reader = writer = None
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                if start <= time.monotonic() < end:
                    out.errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.001)
    finally:
        if writer is not None:
            writer.close()


async def _burst(
    host: str, port: int, path: str, headers: tuple[tuple[str, str], ...], bodies: tuple[bytes, ...],
    connections: int, duration: float, warmup: float,
) -> Capacity:  # fmt: skip
    requests = [_request(host, port, path, headers, body) for body in bodies]
    start = time.monotonic() + warmup
    end = start + duration
    out = Capacity(seconds=duration)
    await asyncio.gather(*(_client(host, port, requests, i, start, end, out) for i in range(connections)))
    return out


def measure(
    host: str,
    port: int,
    path: str,
    headers: tuple[tuple[str, str], ...],
    bodies: tuple[bytes, ...],
    *,
    connections: int = 32,
    duration: float = 3.0,
    warmup: float = 0.5,
) -> Capacity:
    """One closed-loop burst against ``host:port``: answers per second, by status."""
    try:
        import uvloop

        return uvloop.run(_burst(host, port, path, headers, bodies, connections, duration, warmup))
    except ImportError:  # pragma: no cover - the bench extra installs uvloop
        return asyncio.run(_burst(host, port, path, headers, bodies, connections, duration, warmup))
