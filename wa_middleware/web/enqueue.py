"""Fast, durable hand-off of deliveries to the dramatiq Redis broker.

dramatiq's ``RedisBroker.enqueue`` is one Lua call (``HSET`` then ``RPUSH``) per message
from a blocking client. Here concurrent requests share one script call (`ENQUEUE_LUA`), atomic
like the broker's own: while a write is in flight, newly arrived messages wait in a list and go
out together in the next one. The keys and values are exactly those the broker's own script
writes, so stock dramatiq workers consume them. Redis answers only once it applied (and, with
``appendfsync always``, fsynced) the writes, so the 200 that follows means "stored".
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import metrics
from ..errors import QueueUnavailable
from ..keys import KeyLayout
from ..memory import memory_report, policy_error
from ..redis_url import async_client, sync_client

__all__ = ["AsyncEnqueuer", "Recording", "SyncEnqueuer"]

logger = logging.getLogger("wa_middleware.request")

#: Messages per round trip at most: keeps one write short under a burst.
MAX_BATCH = 512

#: The broker's own enqueue (HSET the body, RPUSH the id) for a whole batch, plus the optional
#: recording, as one atomic command: one request and one reply, where MULTI/HSET/RPUSH/EXEC
#: costs four of each (most of the client's CPU when requests arrive one at a time).
#: KEYS: list, hash[, stream]; ARGV: stream max length, stream min id, then id, data, id, data...
ENQUEUE_LUA = """
local n = #ARGV
for i = 3, n, 2 do redis.call('hset', KEYS[2], ARGV[i], ARGV[i + 1]) end
for i = 3, n, 2 do redis.call('rpush', KEYS[1], ARGV[i]) end
if KEYS[3] then
  for i = 3, n, 2 do redis.call('xadd', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[i + 1]) end
  redis.call('xtrim', KEYS[3], 'MINID', '~', ARGV[2])
end
return (n - 2) / 2
"""


class Recording:
    """Keep accepted deliveries in a Redis stream, trimmed by count and by age (see `replay`).

    :param key: the stream's key.
    :param max_count: entries kept at most (trimmed approximately, as Redis does cheaply).
    :param max_age: seconds an entry is kept at most.
    """

    __slots__ = ("key", "max_age_ms", "max_count")

    def __init__(self, key: str, max_count: int, max_age: float) -> None:
        self.key = key
        self.max_count = max_count
        self.max_age_ms = int(max_age * 1000)


def _script_input(
    list_key: str, hash_key: str, recording: Recording | None, items: Sequence[tuple[str, bytes]]
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of `ENQUEUE_LUA` for one batch."""
    args: list[Any]
    if recording is None:
        keys, args = [list_key, hash_key], [0, 0]
    else:
        minid = int(time.time() * 1000) - recording.max_age_ms
        keys, args = [list_key, hash_key, recording.key], [recording.max_count, minid]
    for message_id, data in items:
        args += (message_id, data)
    return keys, args


class _Guard:
    """What a write must check besides the script itself: the memory policy, now and then, and the replicas.

    :param replicas: replicas that must have the write (``WAIT``) before it counts as stored.
    :param timeout: the write's whole budget, seconds; ``WAIT`` gets half of it.
    """

    #: Seconds between two reads of ``maxmemory-policy`` (it can be changed at run time).
    CHECK_EVERY = 10.0

    __slots__ = ("_checked", "_logged", "refusal", "replicas", "wait_ms")

    def __init__(self, replicas: int, timeout: float) -> None:
        self.replicas = replicas
        self.wait_ms = max(int(timeout * 500), 1)
        self.refusal: str | None = None
        self._checked = -1e9
        self._logged = -1e9

    def due(self) -> bool:
        return time.monotonic() - self._checked >= self.CHECK_EVERY

    def checked(self, info: Any) -> None:
        self._checked = time.monotonic()
        self.refusal = policy_error(info)

    def refuse(self) -> None:
        """Raise `QueueUnavailable` when the policy is refused (logged at most once a minute)."""
        if self.refusal is None:
            return
        now = time.monotonic()
        if now - self._logged > 60:
            self._logged = now
            logger.error("wa-middleware: refusing to store deliveries: %s", self.refusal)
        raise QueueUnavailable("Redis's maxmemory-policy could evict stored deliveries")

    def replicated(self, acknowledged: Any) -> None:
        if int(acknowledged) < self.replicas:
            raise QueueUnavailable(f"{acknowledged} of {self.replicas} replicas acknowledged the write in time")


# No client-side retries: redis-py >= 6 retries 3 times with backoff by default, which would blow
# the time budget, and a retried write whose first attempt did land would push the message id
# twice. One try; the sender's redelivery is the retry.
_NO_RETRY = 0


class AsyncEnqueuer:
    """Coalescing enqueuer for one event loop (redis.asyncio connections are loop-bound).

    Every request waits at most ``timeout`` seconds in all. A request that gave up before its
    message went out is dropped from the queue, so a 503 is never followed by a late write of
    that message (a message already on the wire when its request gives up may still land: that
    is a redelivery the worker de-duplicates, never a loss).

    :param url: Redis URL.
    :param keys: the key layout: the queue to push to.
    :param timeout: seconds Redis has to acknowledge a write (connect included).
    """

    def __init__(
        self, url: str, *, keys: KeyLayout, timeout: float, recording: Recording | None = None, replicas: int = 0
    ) -> None:
        self._recording = recording
        self._guard = _Guard(replicas, timeout)
        self._client = async_client(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=AsyncRetry(NoBackoff(), _NO_RETRY),
            max_connections=8,
        )
        self._list_key, self._hash_key = keys.queue, keys.messages
        self._script = self._client.register_script(ENQUEUE_LUA)
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
        # A timer rather than wait_for(shield(...)): no extra task per request on the hot path.
        # When it fires first, the future fails and the flusher skips the message if not yet
        # taken into a write; if the request is cancelled, so is the future.
        timer = loop.call_later(self._timeout, _expire, future)
        started = time.perf_counter()
        ok = False
        try:
            await future
            ok = True
        finally:
            timer.cancel()
            metrics.enqueue_done(time.perf_counter() - started, ok)

    async def _flush_loop(self) -> None:
        batch: list[tuple[str, bytes, asyncio.Future[None]]] = []
        try:
            while self._pending:
                taken, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                batch = [item for item in taken if not item[2].done()]
                if not batch:
                    continue
                try:
                    await self._bounded_write(batch)
                except QueueUnavailable as exc:
                    _settle(batch, exc)
                except Exception as exc:
                    _settle(batch, QueueUnavailable(type(exc).__name__))
                else:
                    _settle(batch, None)
        except BaseException:
            # Cancelled with the loop: nobody will write what is left (nor finish the write in
            # flight, whose outcome is unknown); fail it now rather than let each request wait
            # for its own timeout.
            _settle(batch + self._pending, QueueUnavailable("enqueuer stopped"))
            self._pending = []
            raise

    async def _bounded_write(self, batch: Sequence[tuple[str, bytes, Any]]) -> None:
        if sys.version_info >= (3, 11):
            # A deadline on this task rather than wait_for's extra task per write.
            async with asyncio.timeout(self._timeout):
                await self._write(batch)
        else:
            await asyncio.wait_for(self._write(batch), self._timeout)

    async def _write(self, batch: Sequence[tuple[str, bytes, Any]]) -> None:
        keys, args = _script_input(
            self._list_key, self._hash_key, self._recording, [(message_id, data) for message_id, data, _ in batch]
        )
        guard = self._guard
        if guard.due():
            guard.checked(await self._client.info("memory"))
        guard.refuse()
        await self._script(keys=keys, args=args)
        if guard.replicas:
            guard.replicated(await self._client.wait(guard.replicas, guard.wait_ms))

    async def ping(self) -> float:
        """Round-trip time of a PING in seconds; raises `QueueUnavailable` when Redis does not answer."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await asyncio.wait_for(self._client.ping(), self._timeout)  # type: ignore[arg-type,unused-ignore]
        except Exception as exc:
            raise QueueUnavailable(type(exc).__name__) from None
        return loop.time() - started

    async def memory(self) -> dict[str, Any]:
        """Used and maximum memory and the policy (`memory.memory_report`); records a refused policy."""
        info = await asyncio.wait_for(self._client.info("memory"), self._timeout)
        self._guard.checked(info)
        return memory_report(info)

    async def aclose(self) -> None:
        await self._client.aclose()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(QueueUnavailable("broker did not acknowledge in time"))


def _settle(batch: Sequence[tuple[str, bytes, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, _, future in batch:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


class _Slot:
    __slots__ = ("data", "deadline", "done", "error", "lead", "message_id")

    def __init__(self, message_id: str, data: bytes, deadline: float) -> None:
        self.message_id = message_id
        self.data = data
        self.deadline = deadline
        self.done = threading.Event()
        self.lead = False
        self.error: Exception | None = None


class SyncEnqueuer:
    """Coalescing enqueuer for threaded WSGI servers.

    The first thread to arrive writes; threads arriving meanwhile queue up and the next of
    them writes all queued messages in one round trip when the previous write returns
    (leader/follower hand-over), so no background thread is needed.

    Time bound: a write may take ``timeout / 2`` (connect and reply a quarter each), and the lead is only
    handed to a waiting thread with at least that much of its ``timeout`` left (older ones ride
    along in its write). So a request answers within about ``timeout`` even when Redis hangs.
    """

    def __init__(
        self, url: str, *, keys: KeyLayout, timeout: float, recording: Recording | None = None, replicas: int = 0
    ) -> None:
        self._recording = recording
        self._write_timeout = timeout / 2
        self._guard = _Guard(replicas, timeout / 2)
        self._client = sync_client(
            url,
            # Connect and reply share the write's budget, so one write never takes more than
            # _write_timeout, and a thread handed the lead with that much left keeps its bound.
            socket_timeout=self._write_timeout / 2,
            socket_connect_timeout=self._write_timeout / 2,
            retry=Retry(NoBackoff(), _NO_RETRY),
        )
        self._list_key, self._hash_key = keys.queue, keys.messages
        self._script = self._client.register_script(ENQUEUE_LUA)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        #: Invariant: when no thread leads, nothing is pending.
        self._busy = False

    def enqueue(self, message_id: str, data: bytes) -> None:
        """Store one message; returns once Redis acknowledged it, raises `QueueUnavailable` otherwise."""
        started = time.perf_counter()
        ok = False
        try:
            self._enqueue(message_id, data)
            ok = True
        finally:
            metrics.enqueue_done(time.perf_counter() - started, ok)

    def _enqueue(self, message_id: str, data: bytes) -> None:
        slot = _Slot(message_id, data, time.monotonic() + self._timeout)
        with self._lock:
            self._pending.append(slot)
            if not self._busy:
                self._busy = slot.lead = True
        if not slot.lead:
            slot.done.wait(max(slot.deadline - time.monotonic(), 0))
            with self._lock:
                if not slot.done.is_set():
                    # Neither written nor handed the lead in time. Still queued: withdraw it, so a
                    # 503 is never followed by a late write. Already in a write: it may land (a
                    # redelivery, de-duplicated downstream), never a loss.
                    if slot in self._pending:
                        self._pending.remove(slot)
                    raise QueueUnavailable("broker did not acknowledge in time")
            if not slot.lead:
                if slot.error is not None:
                    raise slot.error
                return
        self._lead(slot)
        if slot.error is not None:
            raise slot.error

    def _lead(self, own: _Slot) -> None:
        with self._lock:
            # Older slots with too little time left to lead ride along in this write; the batch
            # always holds the leader's own slot.
            size = MAX_BATCH if own in self._pending[:MAX_BATCH] else self._pending.index(own) + 1
            batch, self._pending = self._pending[:size], self._pending[size:]
        try:
            keys, args = _script_input(
                self._list_key, self._hash_key, self._recording, [(s.message_id, s.data) for s in batch]
            )
            guard = self._guard
            if guard.due():
                guard.checked(self._client.info("memory"))
            guard.refuse()
            self._script(keys=keys, args=args)
            if guard.replicas:
                guard.replicated(self._client.wait(guard.replicas, guard.wait_ms))
        except BaseException as exc:
            # Whatever stopped the write (even a BaseException tearing this thread down), the other
            # requests of the batch must not answer 200 for something that may not be stored.
            error = exc if isinstance(exc, QueueUnavailable) else QueueUnavailable(type(exc).__name__)
            for s in batch:
                s.error = error
            if not isinstance(exc, Exception):
                raise
        finally:
            # Even on a BaseException (a worker being torn down) the lead must move on, or every
            # later request would wait for a leader that never comes.
            for s in batch:
                s.lead = False
                s.done.set()
            self._hand_over()

    def _hand_over(self) -> None:
        with self._lock:
            now = time.monotonic()
            # The lead goes to the oldest waiting thread that still has time for a whole write, so
            # no request overruns its bound; older ones ride along in its batch.
            for successor in self._pending:
                if successor.deadline - now >= self._write_timeout:
                    successor.lead = True
                    successor.done.set()
                    return
            # Nobody has time left for a write: answer 503 now rather than overrun the bound.
            error = QueueUnavailable("no time left for a write")
            for slot in self._pending:
                slot.error = error
                slot.done.set()
            self._pending = []
            self._busy = False

    def ping(self) -> float:
        """Round-trip time of a PING in seconds; raises `QueueUnavailable` when Redis does not answer."""
        started = time.perf_counter()
        try:
            self._client.ping()
        except Exception as exc:
            raise QueueUnavailable(type(exc).__name__) from None
        return time.perf_counter() - started

    def memory(self) -> dict[str, Any]:
        """Used and maximum memory and the policy (`memory.memory_report`); records a refused policy."""
        info = self._client.info("memory")
        self._guard.checked(info)
        return memory_report(info)

    def close(self) -> None:
        self._client.close()
