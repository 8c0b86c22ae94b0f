"""Fast, durable hand-off of deliveries to the dramatiq Redis broker.

dramatiq's ``RedisBroker.enqueue`` is one Lua call (``HSET`` then ``RPUSH``) per message
from a blocking client. Here a script call (`ENQUEUE_LUA`) stores a batch, atomic like the
broker's own. On an event loop concurrent requests share it (`AsyncEnqueuer`): while a write is
in flight, newly arrived messages wait in a list and go out together in the next one. Under a
threaded WSGI server each request writes its own (`SyncEnqueuer` says why). The keys and values
are exactly those the broker's own script writes, so stock dramatiq workers consume them. Redis
answers only once it applied (and, with ``appendfsync always``, fsynced) the writes, so the 200
that follows means "stored".

The writes go out on connections of the enqueuer's own (the async one's: one, since only one
write is in flight at a time), with the command packed by `wire.EnqueueCommand`; redis-py's
client (and its pool) serves the rest: the memory-policy check, ``PING``, ``INFO``. A request
that finds nothing in flight writes its own message at once, with no task, future, timer or
thread hand-off: the path of a delivery that arrives alone costs what one command costs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry

from .. import metrics
from ..errors import QueueUnavailable
from ..keys import KeyLayout
from ..memory import memory_report, policy_error
from ..redis_url import async_client, sync_client
from .deadline import deadline
from .wire import ENQUEUE_LUA, EnqueueCommand, Recording

__all__ = ["ENQUEUE_LUA", "AsyncEnqueuer", "Recording", "SyncEnqueuer"]

logger = logging.getLogger("wa_middleware.request")

#: Messages per round trip at most: keeps one write short under a burst.
MAX_BATCH = 512


class _Guard:
    """What a write must check besides the script itself: the memory policy, now and then, and the replicas.

    :param replicas: replicas that must have the write (``WAIT``) before it counts as stored.
    :param timeout: the write's whole budget, seconds; ``WAIT`` gets half of it.
    """

    #: Seconds between two reads of ``maxmemory-policy`` (it can be changed at run time).
    CHECK_EVERY = 10.0

    __slots__ = ("_logged", "next_check", "refusal", "replicas", "wait", "wait_ms")

    def __init__(self, replicas: int, timeout: float) -> None:
        self.replicas = replicas
        self.wait_ms = max(int(timeout * 500), 1)
        #: The ``WAIT`` pipelined behind each script call, or None without replicas.
        self.wait = (replicas, self.wait_ms) if replicas else None
        self.refusal: str | None = None
        #: When the policy is to be read again (a write checks only this and `refusal`, inline).
        self.next_check = -1e9
        self._logged = -1e9

    def due(self) -> bool:
        return time.monotonic() >= self.next_check

    def checked(self, info: Any) -> None:
        self.next_check = time.monotonic() + self.CHECK_EVERY
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


def _replies(read: Any, count: int) -> list[Any]:
    """Read ``count`` replies; an error reply is returned, not raised, once read whole, so the
    connection stays in step with the pipelined ``WAIT`` behind the script."""
    out: list[Any] = []
    for _ in range(count):
        try:
            out.append(read())
        except ResponseError as exc:
            out.append(exc)
    return out


def _outcome(replies: list[Any], guard: _Guard) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    if guard.wait is not None:
        guard.replicated(replies[1])


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
        self._guard = _Guard(replicas, timeout)
        self._client = async_client(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=AsyncRetry(NoBackoff(), _NO_RETRY),
            max_connections=8,
        )
        # The write connection has no socket timeout of its own: each write is bounded as a whole
        # by one deadline on the writing task, where a socket timeout would add a timer to every
        # read and a task (wait_for) to every send.
        # (socket_timeout=None explicitly: redis-py >= 8 otherwise gives every connection 5 s.)
        self._writer = async_client(
            url, socket_timeout=None, socket_connect_timeout=timeout, retry=AsyncRetry(NoBackoff(), _NO_RETRY)
        )
        self._write_pool = self._writer.connection_pool
        self._conn: Any = None
        self._command = EnqueueCommand(keys.queue, keys.messages, recording)
        self._timeout = timeout
        self._pending: list[tuple[str, bytes, asyncio.Future[None]]] = []
        #: A write is in flight (a leading request's or the flusher's); invariant: when not, nothing is pending.
        self._busy = False
        self._flusher: asyncio.Task[None] | None = None

    async def enqueue(self, message_id: str, data: bytes) -> None:
        """Store one message; returns once Redis acknowledged it, raises `QueueUnavailable` otherwise."""
        started = time.perf_counter()
        ok = False
        try:
            if self._busy:
                await self._follow(message_id, data)
            else:
                await self._lead(message_id, data)
            ok = True
        finally:
            metrics.enqueue_done(time.perf_counter() - started, ok)

    async def _lead(self, message_id: str, data: bytes) -> None:
        # Nothing in flight: this request writes its own message itself, now. Requests arriving
        # meanwhile queue up and go out together in one write after it, by the flusher.
        self._busy = True
        try:
            if sys.version_info >= (3, 11):
                with deadline(self._timeout):  # (`_bounded_write` inlined: one coroutine less)
                    await self._write(((message_id, data),))
            else:
                await asyncio.wait_for(self._write(((message_id, data),)), self._timeout)
        except QueueUnavailable:
            raise
        except Exception as exc:
            raise QueueUnavailable(type(exc).__name__) from None
        finally:
            # Even when this request was cancelled: the ones queued behind it are not.
            if self._pending:
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
            else:
                self._busy = False

    async def _follow(self, message_id: str, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((message_id, data, future))
        # A timer rather than wait_for(shield(...)): no extra task per request. When it fires first,
        # the future fails and the flusher skips the message if not yet taken into a write; if the
        # request is cancelled, so is the future.
        timer = loop.call_later(self._timeout, _expire, future)
        try:
            await future
        finally:
            timer.cancel()

    async def _flush_loop(self) -> None:
        batch: list[tuple[str, bytes, asyncio.Future[None]]] = []
        try:
            while self._pending:
                taken, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                batch = [item for item in taken if not item[2].done()]
                if not batch:
                    continue
                try:
                    await self._bounded_write([(message_id, data) for message_id, data, _ in batch])
                except QueueUnavailable as exc:
                    _settle(batch, exc)
                except Exception as exc:
                    _settle(batch, QueueUnavailable(type(exc).__name__))
                else:
                    _settle(batch, None)
            batch = []
        except BaseException:
            # Cancelled with the loop: nobody will write what is left (nor finish the write in
            # flight, whose outcome is unknown); fail it now rather than let each request wait
            # for its own timeout.
            _settle(batch + self._pending, QueueUnavailable("enqueuer stopped"))
            self._pending = []
            raise
        finally:
            # No await between the empty check above and here: nothing can have queued meanwhile.
            self._busy = False

    async def _bounded_write(self, items: Sequence[tuple[str, bytes]]) -> None:
        if sys.version_info >= (3, 11):
            # A deadline on this task rather than wait_for's extra task per write.
            with deadline(self._timeout):
                await self._write(items)
        else:
            await asyncio.wait_for(self._write(items), self._timeout)

    async def _write(self, items: Sequence[tuple[str, bytes]]) -> None:
        guard = self._guard
        if guard.refusal is not None or time.monotonic() >= guard.next_check:
            if guard.due():
                guard.checked(await self._client.info("memory"))
            guard.refuse()
        conn = self._conn
        if conn is None:
            conn = self._conn = self._write_pool.make_connection()  # type: ignore[no-untyped-call]
        # A failed or interrupted send or read (a timeout, a cancellation) leaves redis-py's
        # connection disconnected, never holding a stale reply: the next write reconnects.
        await conn.send_packed_command([self._command.pack(items, wait=guard.wait)], check_health=False)
        try:
            reply = await conn.read_response()
        except ResponseError as exc:  # read whole: the connection is still in step
            reply = exc
        if guard.wait is not None or isinstance(reply, Exception):
            await self._rest(conn, items, reply)

    async def _rest(self, conn: Any, items: Sequence[tuple[str, bytes]], first: Any) -> None:
        """The rare rest of a write: the ``WAIT`` reply, the script sent again after ``NOSCRIPT``."""
        guard = self._guard
        replies = [first] + [await _read_one(conn) for _ in range(guard.wait is not None)]
        if isinstance(replies[0], NoScriptError):  # Redis restarted or SCRIPT FLUSH: nothing ran
            await conn.send_packed_command([self._command.pack(items, load=True, wait=guard.wait)], check_health=False)
            replies = [await _read_one(conn) for _ in range(1 + (guard.wait is not None))]
        _outcome(replies, guard)

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
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            flusher.cancel()
            try:
                await flusher
            except asyncio.CancelledError:
                pass
        if self._conn is not None:
            await self._conn.disconnect()
            self._conn = None
        await self._writer.aclose()
        await self._client.aclose()


async def _read_one(conn: Any) -> Any:
    try:
        return await conn.read_response()
    except ResponseError as exc:  # read whole: the connection is still in step
        return exc


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


class SyncEnqueuer:
    """Enqueuer for WSGI servers: each request writes its own message, on a connection of its own.

    Unlike `AsyncEnqueuer`, concurrent requests do not share a write. Under a threaded server the
    waiting is what costs: a request whose message rides in another thread's write must sleep on a
    lock and be woken for it, and under the GIL that hand-off cost more than the round trip it
    saved. Measured under gunicorn ``gthread`` (1 worker x 8 threads, 32 clients in a closed loop,
    ``appendfsync always``), coalescing served 0.61-0.78x of what the floor (one ``LPUSH`` per
    request) served, at 150-250 us more CPU per request; one write per request serves 0.93-1.07x.
    The disk loses nothing by it: Redis fsyncs once for all the writes of one event-loop turn, so
    concurrent writes share an fsync anyway. (The worker's `Finisher` came to the same finding.)

    Connections are kept on a stack of idle ones: a request takes one (or opens one), writes, and
    puts it back, so there are as many as requests in flight at once (the server's threads), each
    used by one thread at a time, with no lock (``list.pop`` and ``append`` are atomic). A write
    that stopped half-way (a timeout, a dead socket, a `BaseException` tearing the thread down) may
    leave a reply unread: its connection is dropped, never put back. After a fork the child starts
    with an empty stack: the parent's sockets are not its own.

    Time bound: the memory-policy check (now and then), the connect and the reply each get a third
    of ``timeout``, so a request answers within ``timeout`` even when Redis hangs; a pipelined
    ``WAIT`` gets half of the reply's third.
    """

    def __init__(
        self, url: str, *, keys: KeyLayout, timeout: float, recording: Recording | None = None, replicas: int = 0
    ) -> None:
        step = timeout / 3
        # WAIT gets half of a socket read's timeout (Redis times a WAIT out only to about 100 ms): its
        # own answer, not a timeout of the read, says how many replicas have the write.
        self._guard = _Guard(replicas, step / 2)
        self._client = sync_client(
            url, socket_timeout=step, socket_connect_timeout=step, retry=Retry(NoBackoff(), _NO_RETRY)
        )
        self._command = EnqueueCommand(keys.queue, keys.messages, recording)
        #: Connections no request is using; the last one put back is the next one taken (warm).
        self._idle: list[Any] = []
        self._pid = os.getpid()

    def enqueue(self, message_id: str, data: bytes) -> None:
        """Store one message; returns once Redis acknowledged it, raises `QueueUnavailable` otherwise."""
        started = time.perf_counter()
        ok = False
        try:
            self._enqueue(message_id, data)
            ok = True
        except QueueUnavailable:
            raise
        except Exception as exc:
            raise QueueUnavailable(type(exc).__name__) from None
        finally:
            metrics.enqueue_done(time.perf_counter() - started, ok)

    def _enqueue(self, message_id: str, data: bytes) -> None:
        guard = self._guard
        if guard.refusal is not None or time.monotonic() >= guard.next_check:
            if guard.due():
                guard.checked(self._client.info("memory"))
            guard.refuse()
        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()
        idle = self._idle
        try:
            conn = idle.pop()
        except IndexError:
            conn = self._connection()
        try:
            self._write(conn, ((message_id, data),))
        except (QueueUnavailable, ResponseError):
            idle.append(conn)  # refused, but every reply was read whole: still in step
            raise
        except BaseException:
            conn.disconnect()
            raise
        idle.append(conn)

    def _connection(self) -> Any:
        """A new connection of the client's kind (TCP, TLS, Unix socket, Sentinel), made outside its
        pool: the pool counts what it makes against its ``max_connections`` (100 by default since
        redis-py 8) and never hears of a connection dropped after a failed write, so 100 failures
        (a Redis outage under load) would leave it refusing to make any: every write would fail,
        for ever, once Redis was back."""
        pool = self._client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def _write(self, conn: Any, items: Sequence[tuple[str, bytes]]) -> None:
        guard = self._guard
        # Only connections whose every reply was read come back here (a new one connects on its first send).
        conn.send_packed_command([self._command.pack(items, wait=guard.wait)], check_health=False)
        try:
            reply = conn.read_response()
        except ResponseError as exc:  # read whole: the connection is still in step
            reply = exc
        if guard.wait is None and not isinstance(reply, Exception):
            return
        # The rare rest of a write: the ``WAIT`` reply, the script sent again after ``NOSCRIPT``.
        replies = [reply, *_replies(conn.read_response, guard.wait is not None)]
        if isinstance(replies[0], NoScriptError):  # Redis restarted or SCRIPT FLUSH: nothing ran
            conn.send_packed_command([self._command.pack(items, load=True, wait=guard.wait)], check_health=False)
            replies = _replies(conn.read_response, 1 + (guard.wait is not None))
        _outcome(replies, guard)

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
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()
        self._client.close()
