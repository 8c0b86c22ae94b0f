"""`Lease`, a worker process's lease on what it took, against a real Redis and a real dramatiq
RedisBroker: heartbeats (RECOVER) on Redis's clock, fencing, reconciling, requeueing, the retrying
of Redis calls and the epoch marker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from tests.conftest import RedisServer
from wa_middleware.keys import KeyLayout
from wa_middleware.worker import lease as lease_module
from wa_middleware.worker.lease import Fenced, Lease
from wa_middleware.worker.watchdog import Watchdog

TIMEOUT = 10.0  # seconds without a heartbeat after which a process is presumed dead
DEAD_TTL = 3_600_000


def redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


class Halts(list[str]):
    """Records the reasons `Lease.halt` reports (its ``on_halt``)."""

    def __call__(self, reason: str) -> None:
        self.append(reason)


def halts(lease: Lease) -> Halts:
    assert isinstance(lease.on_halt, Halts)
    return lease.on_halt


@pytest.fixture
def keys(namespace: str) -> KeyLayout:
    return KeyLayout(namespace=namespace)


@pytest.fixture
def make_lease(redis_url: str, namespace: str, keys: KeyLayout) -> Iterator[Callable[..., Lease]]:
    """Leases of worker processes, each on a broker of its own (its own broker id), halts recorded."""
    brokers: list[RedisBroker] = []

    def make(timeout: float = TIMEOUT, url: str = redis_url) -> Lease:
        broker = RedisBroker(url=url, namespace=namespace)
        brokers.append(broker)
        lease = Lease(broker, keys, timeout=timeout, dead_message_ttl=DEAD_TTL)
        lease.on_halt = Halts()
        return lease

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def lease(make_lease: Callable[..., Lease]) -> Lease:
    return make_lease()


@pytest.fixture
def client(lease: Lease) -> redis.Redis:
    return lease.broker.client


def heartbeat_of(client: redis.Redis, keys: KeyLayout, bid: str) -> float | None:
    return client.zscore(keys.heartbeats, bid)


def take(client: redis.Redis, keys: KeyLayout, bid: str, *rids: str) -> None:
    """Messages taken by process ``bid``: their bodies stored, their ids in its acks."""
    for rid in rids:
        client.hset(keys.messages, rid, f"body {rid}".encode())
    client.sadd(keys.acks(bid), *rids)


# -- heartbeat and the lease -----------------------------------------------------------------------


def test_heartbeat_registers_and_extends_the_lease(lease: Lease, client: redis.Redis, keys: KeyLayout) -> None:
    assert lease.fresh and not lease.valid()
    before = redis_ms(client)
    assert lease.heartbeat() == 0
    score = heartbeat_of(client, keys, lease.broker_id)
    assert score is not None and before <= score <= redis_ms(client)  # on Redis's clock
    assert not lease.fresh
    assert lease.valid()
    # Later heartbeats are not fresh: they refresh the registered entry.
    client.zadd(keys.heartbeats, {lease.broker_id: before - 5_000})
    assert lease.heartbeat() == 0
    assert (heartbeat_of(client, keys, lease.broker_id) or 0) >= before
    assert lease.valid()
    assert halts(lease) == []


def test_the_lease_expires_and_ensure_heartbeats(
    make_lease: Callable[..., Lease], client: redis.Redis, keys: KeyLayout
) -> None:
    lease = make_lease(timeout=0.3)
    lease.heartbeat()
    assert lease.valid()
    time.sleep(0.3)  # 0.9 of the timeout has passed
    assert not lease.valid()
    client.zadd(keys.heartbeats, {lease.broker_id: 0})
    lease.ensure()  # heartbeats: the lease holds again
    assert lease.valid()
    assert heartbeat_of(client, keys, lease.broker_id) > 0
    # While the lease holds, ensure() asks Redis nothing (it would learn of the fencing otherwise).
    client.zrem(keys.heartbeats, lease.broker_id)
    bid = lease.broker_id
    lease.ensure()
    assert lease.broker_id == bid


def test_fenced_when_another_process_recovered_it(lease: Lease, client: redis.Redis, keys: KeyLayout) -> None:
    lease.heartbeat()
    bid = lease.broker_id
    lease.hold(["r1", "r2"], bid)
    assert lease.owner("r1") == bid
    client.zrem(keys.heartbeats, bid)  # as another process's RECOVER does
    with pytest.raises(Fenced):
        lease.heartbeat()
    assert lease.broker_id != bid
    assert str(lease.broker.broker_id) == lease.broker_id  # the broker goes on under the new id
    assert lease.held == {}
    assert lease.dropped == {"r1", "r2"}
    assert lease.fresh and not lease.valid()
    # The next heartbeat registers the new id; the old one stays gone.
    assert lease.heartbeat() == 0
    assert heartbeat_of(client, keys, lease.broker_id) is not None
    assert heartbeat_of(client, keys, bid) is None
    assert lease.dropped == {"r1", "r2"}


def test_a_paused_process_is_recovered_by_another_then_fenced(
    make_lease: Callable[..., Lease], client: redis.Redis, keys: KeyLayout
) -> None:
    paused, live = make_lease(), make_lease()
    assert paused.broker_id != live.broker_id
    paused.heartbeat()
    take(client, keys, paused.broker_id, "r1")
    paused.hold(["r1"], paused.broker_id)
    assert live.heartbeat() == 0  # a first heartbeat presumes nobody dead
    # The paused process misses its heartbeats for longer than the timeout.
    client.zadd(keys.heartbeats, {paused.broker_id: redis_ms(client) - int(TIMEOUT * 1000) - 1_000})
    assert live.heartbeat() == 1
    assert client.lrange(keys.queue, 0, -1) == [b"r1"]
    old = paused.broker_id
    with pytest.raises(Fenced):
        paused.heartbeat()
    assert paused.broker_id != old
    assert paused.dropped == {"r1"}


# -- reconciling and requeueing --------------------------------------------------------------------


def test_reconcile_requeues_an_unknown_message_on_the_second_call(
    lease: Lease, client: redis.Redis, keys: KeyLayout
) -> None:
    lease.heartbeat()
    bid = lease.broker_id
    take(client, keys, bid, "known", "lost", "late")
    lease.hold(["known"], bid)
    assert lease.reconcile() == 0  # once: maybe a reply on its way
    assert client.llen(keys.queue) == 0
    assert client.smembers(keys.acks(bid)) == {b"known", b"lost", b"late"}
    lease.hold(["late"], bid)  # its reply arrived in between
    assert lease.reconcile() == 1  # twice in a row: lost
    assert client.lrange(keys.queue, 0, -1) == [b"lost"]
    assert client.smembers(keys.acks(bid)) == {b"known", b"late"}
    assert lease.reconcile() == 0
    assert client.lrange(keys.queue, 0, -1) == [b"lost"]


def test_requeue_gives_messages_back_at_the_queue_head(lease: Lease, client: redis.Redis, keys: KeyLayout) -> None:
    lease.heartbeat()
    bid = lease.broker_id
    client.hset(keys.messages, "x", b"body x")
    client.rpush(keys.queue, "x")
    take(client, keys, bid, "a", "b")
    take(client, keys, "earlier-id", "c")  # taken under an id this process had before being fenced
    lease.hold(["a", "b"], bid)
    lease.hold(["c"], "earlier-id")
    assert lease.requeue([]) == 0
    assert lease.requeue(["b", "a", "c"]) == 3
    queue = client.lrange(keys.queue, 0, -1)
    assert queue[-1] == b"x" and queue.index(b"b") < queue.index(b"a")  # in order, at the head
    assert set(queue) == {b"a", b"b", b"c", b"x"}
    assert not client.exists(keys.acks(bid), keys.acks("earlier-id"))
    assert lease.held == {}
    assert lease.requeue(["a"]) == 0  # no longer taken: not pushed twice


# -- Redis calls -----------------------------------------------------------------------------------


class Flaky:
    """A Redis call that fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: type[Exception] = redis.ConnectionError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("Redis out of reach")
        return "answer"


@pytest.mark.parametrize("error", [redis.ConnectionError, redis.TimeoutError])
def test_call_retries_a_transient_error(lease: Lease, error: type[Exception]) -> None:
    fn = Flaky(2, error)
    assert lease.call("test", fn) == "answer"
    assert fn.calls == 3


def test_call_does_not_retry_other_errors(lease: Lease) -> None:
    fn = Flaky(1, redis.ResponseError)
    with pytest.raises(redis.ResponseError):
        lease.call("test", fn)
    assert fn.calls == 1


def test_call_gives_up_when_stopping_after_the_grace(lease: Lease, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lease_module, "STOP_GRACE", 0.2)
    calls: list[float] = []

    def down() -> Any:
        calls.append(time.monotonic())
        if len(calls) == 3:
            lease.stopping.set()  # the worker starts shutting down while Redis is out of reach
        raise redis.ConnectionError("Redis out of reach")

    started = time.monotonic()
    assert lease.call("test", down) is None
    elapsed = time.monotonic() - started
    assert len(calls) > 3  # kept retrying before and after the stop, for the grace
    assert 0.2 <= elapsed < 3


def test_heartbeat_while_stopping_with_redis_out_of_reach(
    make_lease: Callable[..., Lease], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease_module, "STOP_GRACE", 0.2)
    lease = make_lease(url=redis_server.url)
    lease.heartbeat()
    bid = lease.broker_id
    redis_server.stop()
    lease.stopping.set()
    with pytest.raises(Fenced, match="out of reach"):
        lease.heartbeat()
    assert lease.broker_id == bid  # giving up is not being fenced: nothing dropped
    assert lease.dropped == set()


# -- the epoch marker ------------------------------------------------------------------------------


def test_the_first_heartbeat_writes_the_epoch_marker(
    make_lease: Callable[..., Lease], client: redis.Redis, keys: KeyLayout
) -> None:
    first = make_lease()
    assert client.get(keys.epoch) is None
    first.heartbeat()
    marker = client.get(keys.epoch)
    assert marker and first.epoch == marker.decode()
    second = make_lease()  # another worker process adopts the marker
    second.heartbeat()
    assert second.epoch == first.epoch
    assert client.get(keys.epoch) == marker
    first.heartbeat()
    assert first.halted is None and halts(first) == []


def test_a_lost_epoch_marker_halts(lease: Lease, client: redis.Redis, keys: KeyLayout) -> None:
    lease.heartbeat()
    client.delete(keys.epoch)  # Redis lost its data
    with pytest.raises(Fenced):  # a halted lease takes no more work
        lease.heartbeat()
    assert len(halts(lease)) == 1
    reason = halts(lease)[0]
    assert "marker" in reason and keys.epoch in reason
    assert lease.halted == reason
    with pytest.raises(Fenced):
        lease.heartbeat()
    assert len(halts(lease)) == 1  # called once


def test_losing_all_data_halts_at_the_first_heartbeat(lease: Lease, client: redis.Redis, keys: KeyLayout) -> None:
    lease.heartbeat()
    client.delete(keys.epoch, keys.heartbeats)  # Redis restarted without its data
    with pytest.raises(Fenced):
        lease.heartbeat()
    assert halts(lease) != []


# -- the watchdog's side (watchdog.py; its process is tested in test_watchdog.py) -----------------


class RecordingWatchdog(Watchdog):
    """A watchdog whose process never starts (it would watch this test process): records what the
    lease tells it; ``enter`` answers from ``answers``."""

    def __init__(self, *answers: bool) -> None:
        super().__init__(TIMEOUT)
        self.answers = list(answers)
        self.calls: list[str] = []
        self.sent: list[float] = []

    def landed(self, sent: float) -> None:
        self.sent.append(sent)

    def enter(self) -> bool:
        self.calls.append("enter")
        return self.answers.pop(0)

    def leave(self) -> None:
        self.calls.append("leave")

    def fenced(self) -> None:
        self.calls.append("fenced")


def test_a_landed_heartbeat_tells_the_watchdog_when_it_was_sent(lease: Lease) -> None:
    dog = lease.watchdog = RecordingWatchdog()
    before = time.monotonic()
    lease.heartbeat()
    assert len(dog.sent) == 1 and before <= dog.sent[0] <= time.monotonic()


def test_an_ordered_callback_waits_for_a_heartbeat_when_the_last_leaves_no_time(
    lease: Lease, client: redis.Redis, keys: KeyLayout
) -> None:
    lease.heartbeat()
    dog = lease.watchdog = RecordingWatchdog(False, True)
    with lease.ordered():
        dog.calls.append("callback")
    assert dog.calls == ["enter", "enter", "callback", "leave"]
    assert len(dog.sent) == 1  # the heartbeat between the two tries, unarmed


def test_fenced_before_an_ordered_callback_starts(lease: Lease, client: redis.Redis, keys: KeyLayout) -> None:
    lease.heartbeat()
    dog = lease.watchdog = RecordingWatchdog(False)
    client.zrem(keys.heartbeats, lease.broker_id)  # taken over meanwhile
    with pytest.raises(Fenced, match="presumed dead before an ordered callback started"), lease.ordered():
        dog.calls.append("callback")
    assert dog.calls == ["enter", "fenced"]  # never armed, never run


def test_fencing_tells_the_watchdog(lease: Lease) -> None:
    lease.heartbeat()
    dog = lease.watchdog = RecordingWatchdog()
    lease.fence(lease.broker_id)
    assert dog.calls == ["fenced"]


def test_without_a_watchdog_an_ordered_callback_just_runs(lease: Lease) -> None:
    ran = []
    with lease.ordered():
        ran.append(1)
    assert ran == [1]
