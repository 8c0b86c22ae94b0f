"""The coalescing enqueuers against a private redis-server: batching, hung and dead Redis,
recovery without a restart, and a pool that stays sound after timeouts."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from wa_middleware.errors import QueueUnavailable
from wa_middleware.keys import KeyLayout
from wa_middleware.web.enqueue import AsyncEnqueuer, SyncEnqueuer

NS, QUEUE = "enq", "q"
LIST, HASH = KeyLayout(NS, QUEUE).queue, KeyLayout(NS, QUEUE).messages
TIMEOUT = 0.5


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.proc.send_signal(signal.SIGCONT)
    srv.stop(signal.SIGKILL)


def stored(server: RedisServer) -> tuple[list[bytes], dict[bytes, bytes]]:
    client = server.client()
    try:
        return list(client.lrange(LIST, 0, -1)), dict(client.hgetall(HASH))
    finally:
        client.close()


def ids(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


def check_consistent(server: RedisServer, acknowledged: set[str]) -> None:
    """Every acknowledged id is in both the list and the hash, with its own body; no id twice."""
    listed, bodies = stored(server)
    assert len(listed) == len(set(listed))
    assert {i.encode() for i in acknowledged} <= set(listed)
    assert set(listed) == set(bodies)
    for key, value in bodies.items():
        assert value == b"body-" + key  # a reply served to the wrong batch would show here


# -- async ---------------------------------------------------------------------------------


async def _enqueue_all(enqueuer: AsyncEnqueuer, batch: list[str]) -> list[BaseException | None]:
    return await asyncio.gather(*(enqueuer.enqueue(i, b"body-" + i.encode()) for i in batch), return_exceptions=True)


def test_async_coalesces_and_stores_all(server: RedisServer) -> None:
    async def main() -> None:
        enqueuer = AsyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=2)
        batch = ids(1500)  # more than one MAX_BATCH
        assert await _enqueue_all(enqueuer, batch) == [None] * len(batch)
        await enqueuer.aclose()
        check_consistent(server, set(batch))
        assert len(stored(server)[0]) == 1500

    asyncio.run(main())


def test_async_hung_redis_503_then_recovers(server: RedisServer) -> None:
    assert server.proc is not None

    async def main() -> None:
        enqueuer = AsyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=TIMEOUT)
        ok = ids(5)
        assert await _enqueue_all(enqueuer, ok) == [None] * 5
        server.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            hung = ids(50)
            started = time.monotonic()
            # A bounded wait: the gather itself must come back, whatever the timings.
            results = await asyncio.wait_for(_enqueue_all(enqueuer, hung), 10)
            elapsed = time.monotonic() - started
            assert all(isinstance(r, QueueUnavailable) for r in results)
            print(f"async enqueuer, SIGSTOPped Redis: 50 concurrent 503s after {elapsed:.2f}s (timeout {TIMEOUT}s)")
        finally:
            server.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        # Same enqueuer, same pool: works again, and no stale reply is served to a later write.
        for _ in range(3):
            later = ids(20)
            assert await _enqueue_all(enqueuer, later) == [None] * 20
            ok += later
        await enqueuer.aclose()
        check_consistent(server, set(ok))

    asyncio.run(main())


def test_async_dead_redis_fails_fast_then_recovers(server: RedisServer) -> None:
    async def main() -> None:
        enqueuer = AsyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=TIMEOUT)
        assert await _enqueue_all(enqueuer, ids(3)) == [None] * 3
        server.stop()
        results = await asyncio.wait_for(_enqueue_all(enqueuer, ids(10)), 10)
        assert all(isinstance(r, QueueUnavailable) for r in results)
        server.start()
        deadline = time.monotonic() + 10
        while True:  # the first try after the restart may meet the dead pooled connection
            if await _enqueue_all(enqueuer, ids(1)) == [None]:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await _enqueue_all(enqueuer, ids(10)) == [None] * 10
        await enqueuer.aclose()

    asyncio.run(main())


def test_async_given_up_messages_are_not_written_later(server: RedisServer) -> None:
    """A request that gave up before its message went out never has it stored after its 503."""

    async def main() -> None:
        enqueuer = AsyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=TIMEOUT)
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()
        gone.cancel()  # what enqueue() leaves behind after a timeout
        enqueuer._pending.append(("given-up", b"body-given-up", gone))
        assert await _enqueue_all(enqueuer, ["kept"]) == [None]
        await enqueuer.aclose()

    asyncio.run(main())
    listed, _ = stored(server)
    assert listed == [b"kept"]


def test_async_cancelled_request_leaves_nothing_unretrieved(server: RedisServer) -> None:
    async def main() -> None:
        enqueuer = AsyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=TIMEOUT)
        task = asyncio.ensure_future(enqueuer.enqueue("x", b"body-x"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _enqueue_all(enqueuer, ["y"]) == [None]
        await enqueuer.aclose()

    asyncio.run(main())  # filterwarnings=error and no "exception was never retrieved"


# -- sync ----------------------------------------------------------------------------------


def _sync_all(enqueuer: SyncEnqueuer, batch: list[str], threads: int = 32) -> list[BaseException | None]:
    def one(i: str) -> BaseException | None:
        try:
            enqueuer.enqueue(i, b"body-" + i.encode())
        except QueueUnavailable as exc:
            return exc
        return None

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, batch))


def test_sync_stores_all_from_many_threads_one_connection_each(server: RedisServer) -> None:
    enqueuer = SyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=2)
    batch = ids(2000)
    assert _sync_all(enqueuer, batch, threads=32) == [None] * len(batch)
    check_consistent(server, set(batch))
    # Each connection serves one request at a time: never more than requests were in flight at once.
    assert 1 <= len(enqueuer._idle) <= 32
    assert len({id(conn) for conn in enqueuer._idle}) == len(enqueuer._idle)
    enqueuer.close()


def test_sync_hung_redis_503_then_recovers(server: RedisServer) -> None:
    assert server.proc is not None
    enqueuer = SyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=TIMEOUT)
    ok = ids(5)
    assert _sync_all(enqueuer, ok) == [None] * 5
    server.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        results = _sync_all(enqueuer, ids(64))
        elapsed = time.monotonic() - started
        assert all(isinstance(r, QueueUnavailable) for r in results)
        print(f"sync enqueuer, SIGSTOPped Redis: 64 requests on 32 threads all 503 after {elapsed:.2f}s")
    finally:
        server.proc.send_signal(signal.SIGCONT)
    later = ids(200)
    assert _sync_all(enqueuer, later) == [None] * 200
    check_consistent(server, set(ok) | set(later))
    enqueuer.close()


def test_sync_dead_redis_then_recovers(server: RedisServer) -> None:
    enqueuer = SyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=TIMEOUT)
    assert _sync_all(enqueuer, ids(3)) == [None] * 3
    server.stop()
    assert all(isinstance(r, QueueUnavailable) for r in _sync_all(enqueuer, ids(40)))
    server.start()
    deadline = time.monotonic() + 10
    while _sync_all(enqueuer, ids(1)) != [None]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert _sync_all(enqueuer, ids(100)) == [None] * 100
    enqueuer.close()


def test_sync_recovers_after_more_failed_writes_than_a_pool_holds(server: RedisServer) -> None:
    """Each write that fails on a dead Redis drops its connection. redis-py's pool (100 connections
    at most since redis-py 8) counts every connection it makes and never hears of a dropped one, so
    connections made by the pool ran out after 100 failures: the web side answered 503 for ever once
    Redis was back (seen in CI: 35,000 503s in 30 s after the restart). They are made outside it."""
    enqueuer = SyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=TIMEOUT)
    assert _sync_all(enqueuer, ids(3)) == [None] * 3
    server.stop()
    for _ in range(150):  # one at a time: each failure drops a connection, the next one makes a new one
        with pytest.raises(QueueUnavailable):
            enqueuer.enqueue(str(uuid.uuid4()), b"body")
    server.start()
    deadline = time.monotonic() + 10
    while _sync_all(enqueuer, ids(1)) != [None]:
        assert time.monotonic() < deadline, "never recovered"
        time.sleep(0.05)
    enqueuer.close()


def test_sync_write_torn_down_drops_its_connection(server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A BaseException between the send and the reply leaves that reply unread on the connection:
    it must never serve another request, which would read the stale reply as its own."""
    enqueuer = SyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=2)
    enqueuer.enqueue("first", b"body-first")
    [conn] = enqueuer._idle

    class Boom(BaseException):
        pass

    def torn_down(*args: object, **kwargs: object) -> object:
        raise Boom()

    monkeypatch.setattr(conn, "read_response", torn_down)
    with pytest.raises(Boom):
        enqueuer.enqueue("sent", b"body-sent")  # written, its reply never read
    assert conn not in enqueuer._idle
    # Refused on the next write: an error reply, read whole, keeps its connection in step and in use.
    client = server.client()
    client.set(HASH, "not a hash")
    with pytest.raises(QueueUnavailable):
        enqueuer.enqueue("refused", b"body-refused")
    [kept] = enqueuer._idle
    client.delete(HASH)
    client.close()
    enqueuer.enqueue("after", b"body-after")
    assert enqueuer._idle == [kept]
    assert stored(server)[0] == [b"first", b"sent", b"after"]
    enqueuer.close()


def test_async_flusher_cancelled_fails_its_requests_at_once(server: RedisServer) -> None:
    assert server.proc is not None

    async def main() -> None:
        enqueuer = AsyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=5)
        assert await _enqueue_all(enqueuer, ["warm"]) == [None]
        server.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            # The first request writes its own message; the other three queue behind it. Cancelling
            # it hands them to the flusher, whose write then hangs too.
            leader = asyncio.ensure_future(enqueuer.enqueue("leader", b"x"))
            await asyncio.sleep(0.05)
            requests = asyncio.gather(*(enqueuer.enqueue(i, b"x") for i in ids(3)), return_exceptions=True)
            await asyncio.sleep(0.05)
            leader.cancel()
            await asyncio.sleep(0.1)  # the flusher's write is in flight
            assert enqueuer._flusher is not None and not enqueuer._flusher.done()
            enqueuer._flusher.cancel()
            # Answered long before the 5 s timeout (bounded wait; the figure is not asserted).
            results = await asyncio.wait_for(requests, 3)
            assert all(isinstance(r, QueueUnavailable) for r in results)
            with pytest.raises(asyncio.CancelledError):
                await leader
        finally:
            server.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        assert await _enqueue_all(enqueuer, ["after"]) == [None]  # the next request leads again
        await enqueuer.aclose()

    asyncio.run(main())


# -- the write connection: one command shape, kept in step ------------------------------------


def test_sync_script_flushed_is_sent_again_whole(server: RedisServer) -> None:
    enqueuer = SyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=2)
    enqueuer.enqueue("before", b"body-before")
    client = server.client()
    client.script_flush()  # as after a Redis restart: NOSCRIPT, nothing ran, then EVAL
    enqueuer.enqueue("after", b"body-after")
    enqueuer.enqueue("again", b"body-again")
    client.close()
    enqueuer.close()
    check_consistent(server, {"before", "after", "again"})
    assert len(stored(server)[0]) == 3


def test_async_script_flushed_is_sent_again_whole(server: RedisServer) -> None:
    async def main() -> None:
        enqueuer = AsyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=2)
        await enqueuer.enqueue("before", b"body-before")
        client = server.client()
        client.script_flush()
        client.close()
        assert await _enqueue_all(enqueuer, ["after", "again"]) == [None, None]
        await enqueuer.aclose()

    asyncio.run(main())
    check_consistent(server, {"before", "after", "again"})


def test_sync_error_reply_is_a_503_and_the_connection_stays_in_step(server: RedisServer) -> None:
    client = server.client()
    client.set(HASH, "not a hash")  # the script's HSET fails: an error reply, read whole
    enqueuer = SyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=2)
    with pytest.raises(QueueUnavailable):
        enqueuer.enqueue("refused", b"body-refused")
    client.delete(HASH)
    enqueuer.enqueue("stored", b"body-stored")  # the same connection: the next reply is its own
    client.close()
    enqueuer.close()
    check_consistent(server, {"stored"})
    assert stored(server)[0] == [b"stored"]


def test_async_error_reply_is_a_503_and_the_connection_stays_in_step(server: RedisServer) -> None:
    client = server.client()
    client.set(HASH, "not a hash")

    async def main() -> None:
        enqueuer = AsyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=2)
        [refused] = await _enqueue_all(enqueuer, ["refused"])
        assert isinstance(refused, QueueUnavailable)
        client.delete(HASH)
        assert await _enqueue_all(enqueuer, ["stored"]) == [None]
        await enqueuer.aclose()

    asyncio.run(main())
    client.close()
    assert stored(server)[0] == [b"stored"]


def test_missing_replica_refuses_every_write_never_a_reply_out_of_step(server: RedisServer) -> None:
    """``WAIT`` is pipelined behind the script: with no replica each write gets its 503. A reply left
    unread would let the next write read the previous WAIT's and the script's and pass as stored."""
    enqueuer = SyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=1.0, replicas=1)
    for message_id in ("one", "two", "three"):
        with pytest.raises(QueueUnavailable, match="replicas"):
            enqueuer.enqueue(message_id, b"body-" + message_id.encode())
    enqueuer.close()

    async def main() -> None:
        async_enqueuer = AsyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=0.5, replicas=1)
        for message_id in ("four", "five"):
            [result] = await _enqueue_all(async_enqueuer, [message_id])
            assert isinstance(result, QueueUnavailable) and "replicas" in str(result)
        await async_enqueuer.aclose()

    asyncio.run(main())


def test_one_at_a_time_needs_no_flusher_task_and_no_slot(server: RedisServer) -> None:
    """The path of a delivery that arrives alone: the request writes its own message."""

    async def main() -> None:
        enqueuer = AsyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=2)
        for message_id in ids(20):
            await enqueuer.enqueue(message_id, b"body-" + message_id.encode())
        assert enqueuer._flusher is None and not enqueuer._busy and not enqueuer._pending
        await enqueuer.aclose()

    asyncio.run(main())
    sync = SyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=2)
    for message_id in ids(20):
        sync.enqueue(message_id, b"body-" + message_id.encode())
    assert len(sync._idle) == 1  # one connection, taken and put back by each request
    sync.close()
    assert len(stored(server)[0]) == 40


def test_sync_a_forked_child_opens_its_own_connection(server: RedisServer) -> None:
    enqueuer = SyncEnqueuer(server.url, keys=KeyLayout(NS, QUEUE), timeout=2)
    enqueuer.enqueue("parent", b"body-parent")
    [parents] = enqueuer._idle
    enqueuer._pid = -1  # what the child sees: the connections were opened by another process
    enqueuer.enqueue("child", b"body-child")
    assert parents not in enqueuer._idle and len(enqueuer._idle) == 1
    parents.disconnect()
    enqueuer.close()
    check_consistent(server, {"parent", "child"})
