"""Fast, durable hand-off of deliveries to the dramatiq Redis broker.

dramatiq's ``RedisBroker.enqueue`` is one Lua call (``HSET`` then ``RPUSH``) per message
from a blocking client. Here concurrent requests share one ``MULTI``/``EXEC`` round trip:
while a write is in flight, newly arrived messages wait in a list and go out together in the
next one. The keys and values are exactly those the broker's own script writes, so stock
dramatiq workers consume them. ``EXEC`` returns only once Redis applied (and, with
``appendfsync always``, fsynced) the writes, so the 200 that follows means "stored".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aredis

from .errors import QueueUnavailable

__all__ = ["AsyncEnqueuer", "SyncEnqueuer", "queue_keys"]

#: Messages per round trip at most: keeps one EXEC short under a burst.
MAX_BATCH = 512


def queue_keys(namespace: str, queue_name: str) -> tuple[str, str]:
    """The list of message ids and the hash of message bodies that dramatiq's broker uses."""
    full = f"{namespace}:{queue_name}"
    return full, f"{full}.msgs"


def _expire(future: asyncio.Future[None]) -> None:
    # The write may still land later: the 503 makes the sender redeliver, and duplicates are expected.
    if not future.done():
        future.set_exception(QueueUnavailable("broker did not acknowledge in time"))


class AsyncEnqueuer:
    """Coalescing enqueuer for one event loop (redis.asyncio connections are loop-bound).

    :param url: Redis URL.
    :param namespace: dramatiq's key namespace (``"dramatiq"`` by default in dramatiq).
    :param queue_name: queue to push to.
    :param timeout: seconds Redis has to acknowledge a write (connect included).
    """

    def __init__(self, url: str, *, namespace: str, queue_name: str, timeout: float) -> None:
        self._client = aredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            max_connections=8,
        )
        self._list_key, self._hash_key = queue_keys(namespace, queue_name)
        self._timeout = timeout
        self._pending: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def enqueue(self, message_id: str, data: bytes) -> None:
        """Store one message; returns once Redis acknowledged it, raises `QueueUnavailable` otherwise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((message_id, data, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop())
        # A timer, not asyncio.wait_for: no extra task per request on the hot path.
        timer = loop.call_later(self._timeout, _expire, future)
        try:
            await future
        finally:
            timer.cancel()

    async def _flush_loop(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await asyncio.wait_for(self._write(batch), self._timeout)
            except Exception as exc:
                error = QueueUnavailable(type(exc).__name__)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def _write(self, batch: Sequence[tuple[str, bytes, Any]]) -> None:
        mapping: dict[Any, bytes] = {message_id: data for message_id, data, _ in batch}
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._hash_key, mapping=mapping)
            pipe.rpush(self._list_key, *mapping)
            await pipe.execute()

    async def ping(self) -> float:
        """Round-trip time of a PING in seconds; raises `QueueUnavailable` when Redis does not answer."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await asyncio.wait_for(self._client.ping(), self._timeout)
        except Exception as exc:
            raise QueueUnavailable(type(exc).__name__) from None
        return loop.time() - started

    async def aclose(self) -> None:
        await self._client.aclose()


class _Slot:
    __slots__ = ("data", "done", "error", "lead", "message_id")

    def __init__(self, message_id: str, data: bytes) -> None:
        self.message_id = message_id
        self.data = data
        self.done = threading.Event()
        self.lead = False
        self.error: Exception | None = None


class SyncEnqueuer:
    """Coalescing enqueuer for threaded WSGI servers.

    The first thread to arrive writes; threads arriving meanwhile queue up and the next of
    them writes all queued messages in one round trip when the previous write returns
    (leader/follower hand-over), so no background thread is needed.
    """

    def __init__(self, url: str, *, namespace: str, queue_name: str, timeout: float) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
        )
        self._list_key, self._hash_key = queue_keys(namespace, queue_name)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._busy = False

    def enqueue(self, message_id: str, data: bytes) -> None:
        """Store one message; returns once Redis acknowledged it, raises `QueueUnavailable` otherwise."""
        slot = _Slot(message_id, data)
        with self._lock:
            self._pending.append(slot)
            if not self._busy:
                self._busy = slot.lead = True
        if not slot.lead:
            slot.done.wait(self._timeout)
            with self._lock:
                if not slot.done.is_set() and not slot.lead:
                    if slot in self._pending:
                        self._pending.remove(slot)
                    raise QueueUnavailable("broker did not acknowledge in time")
            if not slot.lead:
                if slot.error is not None:
                    raise slot.error
                return
        self._lead()
        if slot.error is not None:
            raise slot.error

    def _lead(self) -> None:
        with self._lock:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        try:
            with self._client.pipeline(transaction=True) as pipe:
                mapping: dict[Any, bytes] = {s.message_id: s.data for s in batch}
                pipe.hset(self._hash_key, mapping=mapping)
                pipe.rpush(self._list_key, *(s.message_id for s in batch))
                pipe.execute()
        except Exception as exc:
            error = QueueUnavailable(type(exc).__name__)
            for s in batch:
                s.error = error
        for s in batch:
            s.lead = False
            s.done.set()
        with self._lock:
            if self._pending:
                successor = self._pending[0]
                successor.lead = True
                successor.done.set()
            else:
                self._busy = False

    def ping(self) -> float:
        """Round-trip time of a PING in seconds; raises `QueueUnavailable` when Redis does not answer."""
        import time

        started = time.perf_counter()
        try:
            self._client.ping()
        except Exception as exc:
            raise QueueUnavailable(type(exc).__name__) from None
        return time.perf_counter() - started

    def close(self) -> None:
        self._client.close()
