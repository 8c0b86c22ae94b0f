"""The worker's Lua scripts (PEEK, PLAN, FINISH, RECOVER, REQUEUE) run directly on a real Redis,
without worker processes.

Arguments are built only with `wa_middleware.worker.finish` (the one schema of the records) and
keys only with `KeyLayout`, the way `Dispatcher.plan` / `Dispatcher.finish`, the broker's fetch and
`Lease` build them; every test then asserts on the Redis state the script left.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import pytest
import redis

from wa_middleware.keys import KeyLayout
from wa_middleware.worker import finish, scripts
from wa_middleware.worker.finish import OPS, RECORDS, Ops, plan_message, plan_own, plan_unit
from wa_middleware.worker.marks import NO_MARK, Mark

BROKER = "broker-under-test"
OTHER = "other-broker"
TTL = 60_000
TIMEOUT = 10_000  # ms without a heartbeat after which a worker process is presumed dead
DEAD_TTL = 3_600_000
CB = "on_message"
LUA = Path(scripts.__file__).parent / "lua"


def now_ms() -> int:
    """The worker's clock (what FINISH is passed for the dead letters' time)."""
    return int(time.time() * 1000)


def redis_ms(client: redis.Redis) -> int:
    """Redis's own clock, which PEEK, PLAN and RECOVER read."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


# -- records, built only through finish.py ---------------------------------------------------------


def unit(
    key: str,
    uid: str,
    *,
    field: str = CB,
    lane: str = "",
    stale: str = "",
    mark: Mark = NO_MARK,
    after: str = "",
) -> list[Any]:
    hour, shard, digest = mark
    return plan_unit(
        key=key, field=field, lane=lane, uid=uid, stale=stale, hour=hour, shard=shard, digest=digest, after=after
    )


def stored(lua: Lua, *waiting: tuple[str, str, str, bytes], rid: str = "") -> list[Any]:
    """The FINISH of a delivery whose units PLAN left waiting ("q"): each (key, uid, lane, message)
    gets its own message stored (the ``wait`` op), and the delivery ``rid`` is acked."""
    ops = Ops()
    for key, uid, lane, data in waiting:
        ops.wait(key, CB, uid, lane, data)
    return lua.finish(ops, rid=rid)


def delivery(rid: str, mid: str, *units: list[Any], group: str = "") -> list[Any]:
    """The PLAN records of a delivery message: its PLAN_MESSAGE, then its units."""
    return [*plan_message(rid=rid, mid=mid, count=len(units), group=group), *chain.from_iterable(units)]


def own(rid: str, mid: str, *, key: str, field: str = CB, lane: str = "") -> list[Any]:
    """The PLAN records of a unit's own message (a retry, a lane head)."""
    return [*plan_message(rid=rid, mid=mid, count=-1, group=""), *plan_own(key=key, field=field, lane=lane)]


def text(values: list[Any]) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


class Lua:
    """The scripts registered on one client (`scripts.Scripts`), called with the KEYS the
    dispatcher, the broker and the lease pass."""

    def __init__(self, client: redis.Redis, keys: KeyLayout) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts.Scripts(client)

    @property
    def acks(self) -> str:
        return self.keys.acks(BROKER)

    def plan(
        self,
        *messages: list[Any],
        pop: bool = False,
        fresh: bool = True,
        ttl: int = TTL,
        bid: str = BROKER,
        epoch: str = "",
    ) -> list[str]:
        k = self.keys
        keys = scripts.plan_keys(k, bid)
        args = [bid, ttl, "1" if pop else "0", "1" if fresh else "0", epoch, *chain.from_iterable(messages)]
        return [r.decode() for r in self.scripts.plan(keys=keys, args=args)]

    def finish(
        self,
        ops: Ops,
        *,
        rid: str = "",
        take: int = False,
        now: int | None = None,
        ttl: int = TTL,
        bid: str = BROKER,
    ) -> list[Any]:
        return self.finish_many([(ops, rid, take, bid)], now=now, ttl=ttl)[0]

    def finish_many(
        self, messages: list[tuple[Ops, str, int, str]], *, now: int | None = None, ttl: int = TTL
    ) -> list[Any]:
        """One FINISH call for a batch of messages (as the worker's `Finisher` coalesces them)."""
        k = self.keys
        keys = scripts.finish_keys(k)
        args: list[Any] = [now if now is not None else now_ms(), ttl]
        for ops, rid, take, bid in messages:
            record = finish.finish_message(rid=rid, acks=k.acks(bid), bid=bid, take=str(int(take)), count=ops.n)
            args += [*record, *ops]
        return self.scripts.finish(keys=keys, args=args)

    def peek(self, count: int) -> Any:
        k = self.keys
        return self.scripts.peek(keys=[k.queue, k.messages, k.retries], args=[count])

    def recover(
        self,
        bid: str = BROKER,
        *,
        fresh: bool = True,
        timeout: int = TIMEOUT,
        dead_ttl: int = DEAD_TTL,
        candidate: str = "",
        created: bool = False,
    ) -> list[Any]:
        """RECOVER's [state, requeued, epoch] (and its ``created`` flag last, with ``created=True``)."""
        k = self.keys
        keys = [k.heartbeats, k.queue, k.messages, k.dead_letters, k.dead_messages, k.epoch]
        args = [bid, timeout, k.acks_prefix, "1" if fresh else "0", dead_ttl, candidate]
        result = text(self.scripts.recover(keys=keys, args=args))
        return result if created else result[:3]

    def requeue(self, *rids: str, bid: str = BROKER) -> int:
        k = self.keys
        return int(self.scripts.requeue(keys=[k.acks(bid), k.queue, k.messages], args=list(rids)))

    # -- state -----------------------------------------------------------------------------

    def enqueue(self, rid: str, data: bytes = b"body") -> None:
        """Put a message on the ready queue as dramatiq does: body in ``.msgs``, id on the list."""
        self.client.hset(self.keys.messages, rid, data)
        self.client.rpush(self.keys.queue, rid)

    def take(self, rid: str, data: bytes = b"body", *, bid: str = BROKER) -> None:
        """A message this worker process took: its body stored, its id in the acks, its heartbeat alive."""
        self.client.hset(self.keys.messages, rid, data)
        self.client.sadd(self.keys.acks(bid), rid)
        self.client.zadd(self.keys.heartbeats, {bid: redis_ms(self.client)})

    def queue(self) -> list[bytes]:
        return self.client.lrange(self.keys.queue, 0, -1)

    def lane(self, lane: str) -> list[bytes]:
        return self.client.lrange(lane, 0, -1)

    def field(self, key: str, field: str = CB) -> bytes | None:
        return self.client.hget(key, field)

    def stat(self, name: str) -> int:
        return int(self.client.hget(self.keys.stats, name) or 0)

    def ack_set(self, bid: str = BROKER) -> set[bytes]:
        return self.client.smembers(self.keys.acks(bid))

    def heartbeat(self, bid: str = BROKER) -> float | None:
        return self.client.zscore(self.keys.heartbeats, bid)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def keys(namespace: str) -> KeyLayout:
    return KeyLayout(namespace=namespace)


@pytest.fixture
def lua(client: redis.Redis, keys: KeyLayout) -> Lua:
    return Lua(client, keys)


def assert_ttl(client: redis.Redis, key: str, ttl: int = TTL) -> None:
    pttl = client.pttl(key)
    assert 0 < pttl <= ttl, f"{key}: pttl {pttl}"


def assert_redis_time(score: float | None, before: int, after: int) -> None:
    """``score`` was read from Redis's clock between ``before`` and ``after`` (both Redis TIME)."""
    assert score is not None
    assert before <= score <= after, (before, score, after)


OK = [b"ok"]
# -- PLAN ------------------------------------------------------------------------------------------


def test_plan_fresh_delivery_claims_its_units(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1, e2 = keys.idem("msg:e1"), keys.idem("msg:e2")
    units = [unit(e1, "m1.0"), unit(e1, "m1.1", field="other"), unit(e2, "m1.2")]
    assert lua.plan(delivery("r1", "m1", *units)) == ["rrr"]
    assert client.hgetall(e1) == {CB.encode(): b"c|m1", b"other": b"c|m1"}
    assert lua.field(e2) == b"c|m1"
    assert_ttl(client, e1)
    assert_ttl(client, e2)
    assert lua.stat("duplicates") == 0


def test_plan_ttl_is_the_one_passed(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1 = keys.idem("msg:e1")
    lua.plan(delivery("r1", "m1", unit(e1, "m1.0")), ttl=5_000)
    assert_ttl(client, e1, 5_000)


def test_plan_replanning_the_same_message_runs_it_again(lua: Lua, keys: KeyLayout) -> None:
    e1 = keys.idem("msg:e1")
    message = delivery("r1", "m1", unit(e1, "m1.0"))
    assert lua.plan(message) == ["r"]
    assert lua.plan(message) == ["r"]  # its own claim: a redelivery of the claiming message runs it
    assert lua.field(e1) == b"c|m1"
    assert lua.stat("duplicates") == 0


def test_plan_another_message_with_the_same_event_is_skipped(lua: Lua, keys: KeyLayout) -> None:
    e1, e2 = keys.idem("msg:e1"), keys.idem("msg:e2")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0"))) == ["r"]
    assert lua.plan(delivery("r2", "m2", unit(e1, "m2.0"), unit(e2, "m2.1"))) == ["sr"]
    assert lua.stat("duplicates") == 1
    assert lua.plan(delivery("r3", "m3", unit(e1, "m3.0"), unit(e2, "m3.1"))) == ["ss"]
    assert lua.stat("duplicates") == 3
    assert lua.field(e1) == b"c|m1"
    assert lua.field(e2) == b"c|m2"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"d", id="done"),
        pytest.param(b"x|m0.0", id="dead"),
        pytest.param(b"c|m0", id="claimed-by-another"),
    ],
)
def test_plan_done_dead_or_claimed_fields_are_skipped(
    lua: Lua, keys: KeyLayout, client: redis.Redis, value: bytes
) -> None:
    e1 = keys.idem("msg:e1")
    client.hset(e1, CB, value)
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0"))) == ["s"]
    assert lua.field(e1) == value
    assert client.pttl(e1) == -1  # a skip writes nothing to the key
    assert lua.stat("duplicates") == 1


@pytest.mark.parametrize(
    ("planned", "taken", "left"),
    [
        pytest.param(["a", "b", "c"], ["a", "b", "c"], [], id="whole-queue"),
        pytest.param(["a", "b"], ["a", "b"], ["c"], id="head-only"),
        pytest.param(["a", "c", "b"], ["a"], ["b", "c"], id="stops-at-mismatch"),
        pytest.param(["b", "c"], [], ["a", "b", "c"], id="head-mismatch"),
    ],
)
def test_plan_pop_takes_the_queue_head_only_while_expected(
    lua: Lua, keys: KeyLayout, client: redis.Redis, planned: list[str], taken: list[str], left: list[str]
) -> None:
    for rid in "abc":
        lua.enqueue(rid)
    before = redis_ms(client)
    messages = [delivery(rid, f"m-{rid}", unit(keys.idem(f"msg:{rid}"), f"m-{rid}.0")) for rid in planned]
    assert lua.plan(*messages, pop=True) == ["r"] * len(taken)  # fewer results than messages
    assert lua.queue() == [rid.encode() for rid in left]
    assert lua.ack_set() == {rid.encode() for rid in taken}
    assert_redis_time(lua.heartbeat(), before, redis_ms(client))  # registered (fresh), on Redis's clock
    for rid in planned:  # only the messages taken claimed their units
        expected = f"c|m-{rid}".encode() if rid in taken else None
        assert lua.field(keys.idem(f"msg:{rid}")) == expected
    # The bodies stay in the messages hash: the worker acks (FINISH) removes them.
    assert client.hlen(keys.messages) == 3


def test_plan_pop_takes_unit_and_foreign_messages_too(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1 = keys.idem("msg:e1")
    client.hset(e1, CB, "c|u1")
    lua.enqueue("r-unit")
    lua.enqueue("r-foreign")
    result = lua.plan(own("r-unit", "u1", key=e1), own("r-foreign", "f1", key="", field=""), pop=True)
    assert result == ["r", "s"]  # a message that is not ours is taken and planned as a skip
    assert lua.queue() == []
    assert lua.ack_set() == {b"r-unit", b"r-foreign"}


def test_plan_without_pop_leaves_the_queue_alone(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    lua.enqueue("r1")
    e1 = keys.idem("msg:e1")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0")), pop=False) == ["r"]
    assert lua.queue() == [b"r1"]
    assert not client.exists(lua.acks)
    assert client.zscore(keys.heartbeats, BROKER) is None
    assert lua.field(e1) == b"c|m1"  # planned all the same
    # Not taken: planning is not limited to the head of the queue.
    assert lua.plan(delivery("elsewhere", "m2", unit(keys.idem("msg:e2"), "m2.0"))) == ["r"]


@pytest.mark.parametrize("one_call", [pytest.param(True, id="one-batch"), pytest.param(False, id="two-batches")])
def test_plan_ordered_units_first_runs_second_waits(
    lua: Lua, keys: KeyLayout, client: redis.Redis, one_call: bool
) -> None:
    lane = keys.lane("phone:user")
    e1, e2 = keys.idem("msg:e1"), keys.idem("msg:e2")
    first = delivery("r1", "m1", unit(e1, "m1.0", lane=lane))
    second = delivery("r2", "m2", unit(e2, "m2.0", lane=lane))
    if one_call:
        assert lua.plan(first, second) == ["r", "q"]
    else:
        assert lua.plan(first) == ["r"]
        assert lua.plan(second) == ["q"]
    assert lua.lane(lane) == [b"m1.0", b"m2.0"]
    assert lua.field(e1) == b"c|m1"  # run inline by its delivery
    assert lua.field(e2) == b"c|m2"  # held by its delivery until that one's FINISH stores its message
    assert not client.exists(keys.units)
    assert stored(lua, (e2, "m2.0", lane, b"unit m2.0")) == OK
    assert lua.field(e2) == b"c|m2.0"  # claimed by its own (stored) message
    assert client.hgetall(keys.units) == {b"m2.0": b"unit m2.0"}
    assert_ttl(client, e1)
    assert_ttl(client, e2)
    assert lua.stat("duplicates") == 0


def test_plan_two_units_of_one_lane_in_the_same_message_both_run(
    lua: Lua, keys: KeyLayout, client: redis.Redis
) -> None:
    lane, other = keys.lane("phone:user"), keys.lane("phone:other")
    e1, e2, e3 = keys.idem("msg:e1"), keys.idem("msg:e2"), keys.idem("msg:e3")
    units = [unit(e1, "m1.0", lane=lane), unit(e2, "m1.1", lane=other), unit(e3, "m1.2", lane=lane)]
    assert lua.plan(delivery("r1", "m1", *units)) == ["rrr"]
    assert lua.lane(lane) == [b"m1.0", b"m1.2"]
    assert lua.lane(other) == [b"m1.1"]
    assert {lua.field(e) for e in (e1, e2, e3)} == {b"c|m1"}
    assert not client.exists(keys.units)


def test_plan_a_busy_lane_queues_every_unit_of_a_message(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    lane = keys.lane("phone:user")
    e0, e1, e2 = keys.idem("msg:e0"), keys.idem("msg:e1"), keys.idem("msg:e2")
    assert lua.plan(delivery("r0", "m0", unit(e0, "m0.0", lane=lane))) == ["r"]
    units = [unit(e1, "m1.0", lane=lane), unit(e2, "m1.1", lane=lane)]
    assert lua.plan(delivery("r1", "m1", *units)) == ["qq"]
    assert lua.lane(lane) == [b"m0.0", b"m1.0", b"m1.1"]
    assert (lua.field(e1), lua.field(e2)) == (b"c|m1", b"c|m1")
    stored(lua, (e1, "m1.0", lane, b"d0"), (e2, "m1.1", lane, b"d1"))
    assert client.hgetall(keys.units) == {b"m1.0": b"d0", b"m1.1": b"d1"}
    assert (lua.field(e1), lua.field(e2)) == (b"c|m1.0", b"c|m1.1")


def test_plan_replanning_a_queued_unit_does_not_push_it_again(lua: Lua, keys: KeyLayout) -> None:
    lane = keys.lane("phone:user")
    e0, e1 = keys.idem("msg:e0"), keys.idem("msg:e1")
    lua.plan(delivery("r0", "m0", unit(e0, "m0.0", lane=lane)))
    waiting = delivery("r1", "m1", unit(e1, "m1.0", lane=lane))
    assert lua.plan(waiting) == ["q"]
    assert lua.plan(waiting) == ["q"]  # not stored yet (its delivery died before its FINISH): again
    assert lua.lane(lane) == [b"m0.0", b"m1.0"]
    stored(lua, (e1, "m1.0", lane, b"d"))
    assert lua.plan(waiting) == ["s"]  # its own message runs it, at its turn, not the delivery
    assert lua.lane(lane) == [b"m0.0", b"m1.0"]


def progress(rank: int, message_id: str = "wamid.out", hour: int | None = None) -> str:
    """The ``stale`` argument of a status of ``rank`` (marks.progress_arg), its own time now."""
    from wa_middleware.worker.marks import progress_arg

    return progress_arg(message_id, rank, 4, str(HOUR if hour is None else hour), now=time.time())


@pytest.mark.parametrize(
    ("ranks", "expected", "stale", "progress_rank"),
    [
        pytest.param([1, 2, 3], ["r", "r", "r"], 0, 3, id="in-order"),
        pytest.param([1, 3, 2], ["r", "r", "t"], 1, 3, id="lower-after-higher"),
        pytest.param([3, 1, 2], ["r", "t", "t"], 2, 3, id="two-stale"),
        pytest.param([2, 2], ["r", "r"], 0, 2, id="equal-rank"),
        pytest.param([4, 3, 4], ["r", "t", "r"], 1, 4, id="same-rank-after-stale"),
    ],
)
def test_plan_stale_statuses(
    lua: Lua,
    keys: KeyLayout,
    client: redis.Redis,
    ranks: list[int],
    expected: list[str],
    stale: int,
    progress_rank: int,
) -> None:
    results, fields = [], []
    for n, rank in enumerate(ranks):
        key = keys.idem(f"status:wamid.out:{n}")
        fields.append(key)
        results += lua.plan(delivery(f"r{n}", f"m{n}", unit(key, f"m{n}.0", stale=progress(rank), mark=mark(n))))
    assert results == expected
    assert lua.stat("stale_statuses") == stale
    # The progress reached: a status just below it is stale now, one at it is not.
    below = delivery("rb", "mb", unit(keys.idem("status:below"), "mb.0", stale=progress(progress_rank - 1)))
    at = delivery("ra", "ma", unit(keys.idem("status:at"), "ma.0", stale=progress(progress_rank)))
    assert lua.plan(below) == ["t"] and lua.plan(at) == ["r"]
    for key, result, n in zip(fields, results, range(len(ranks)), strict=True):
        if result == "t":
            assert lua.field(key) is None  # marked done: a redelivery skips it too
            assert lua.plan(delivery(f"x{n}", f"x{n}", unit(key, f"x{n}.0", mark=mark(n)))) == ["s"]
        else:
            assert lua.field(key) == f"c|m{n}".encode()


def test_a_later_status_in_a_later_hour_still_makes_an_earlier_one_stale(lua: Lua, keys: KeyLayout) -> None:
    """The read of two hours ago marks its rank in its own hour; a delivered of three hours ago,
    arriving after it, looks in every hour from its own to now and finds it."""
    week = 7 * 86_400_000
    read, delivered = keys.idem("status:read"), keys.idem("status:delivered")
    assert lua.plan(delivery("r1", "m1", unit(read, "m1.0", stale=progress(3, hour=HOUR - 2))), ttl=week) == ["r"]
    later = delivery("r2", "m2", unit(delivered, "m2.0", stale=progress(2, hour=HOUR - 3)))
    assert lua.plan(later, ttl=week) == ["t"]
    # Another message's progress is its own.
    other = delivery("r3", "m3", unit(keys.idem("status:other"), "m3.0", stale=progress(2, "wamid.other", HOUR - 3)))
    assert lua.plan(other, ttl=week) == ["r"]


def test_plan_stale_status_only_checked_when_unclaimed(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    delivered, read = keys.idem("status:delivered"), keys.idem("status:read")
    first = delivery("r1", "m1", unit(delivered, "m1.0", stale=progress(2)))
    assert lua.plan(first) == ["r"]
    assert lua.plan(delivery("r2", "m2", unit(read, "m2.0", stale=progress(3)))) == ["r"]
    # The redelivery of the first, already claimed by it, still runs it: stale is decided once.
    assert lua.plan(first) == ["r"]
    assert lua.stat("stale_statuses") == 0


def test_plan_stale_status_is_not_counted_as_a_duplicate(lua: Lua, keys: KeyLayout) -> None:
    read, delivered = keys.idem("status:read"), keys.idem("status:delivered")
    assert lua.plan(delivery("r1", "m1", unit(read, "m1.0", stale=progress(3)))) == ["r"]
    assert lua.plan(delivery("r2", "m2", unit(delivered, "m2.0", stale=progress(2)))) == ["t"]
    assert lua.stat("stale_statuses") == 1
    assert lua.stat("duplicates") == 0


@pytest.mark.parametrize(
    ("value", "lane_items", "expected"),
    [
        pytest.param(b"c|u1", None, "r", id="claimed-by-it"),
        pytest.param(b"c|other", None, "s", id="claimed-by-another"),
        pytest.param(b"c|m1", None, "s", id="claimed-by-its-delivery"),
        pytest.param(b"d", None, "s", id="done"),
        pytest.param(b"x|u1", None, "s", id="dead"),
        pytest.param(None, None, "s", id="unclaimed"),
        pytest.param(b"c|u1", ["u1", "u2"], "r", id="ordered-lane-head"),
        pytest.param(b"c|u1", ["u0", "u1"], "s", id="ordered-not-lane-head"),
        pytest.param(b"c|u1", [], "s", id="ordered-empty-lane"),
        pytest.param(b"d", ["u1"], "s", id="ordered-head-but-done"),
    ],
)
def test_plan_own_message(
    lua: Lua,
    keys: KeyLayout,
    client: redis.Redis,
    value: bytes | None,
    lane_items: list[str] | None,
    expected: str,
) -> None:
    key = keys.idem("msg:e1")
    if value is not None:
        client.hset(key, CB, value)
    lane = ""
    if lane_items is not None:
        lane = keys.lane("phone:user")
        if lane_items:
            client.rpush(lane, *lane_items)
    assert lua.plan(own("r-u1", "u1", key=key, lane=lane)) == [expected]
    assert lua.field(key) == value  # planning a unit's own message writes nothing
    if lane:
        assert lua.lane(lane) == [item.encode() for item in lane_items or []]
    assert lua.stat("duplicates") == 0


# -- PLAN: fencing ---------------------------------------------------------------------------------


def test_plan_fresh_registers_the_heartbeat_on_redis_clock(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    lua.enqueue("r1")
    before = redis_ms(client)
    assert lua.plan(delivery("r1", "m1", unit(keys.idem("msg:e1"), "m1.0")), pop=True, fresh=True) == ["r"]
    # The client passes no time at all: the heartbeat is Redis's TIME.
    assert_redis_time(lua.heartbeat(), before, redis_ms(client))
    assert lua.ack_set() == {b"r1"}


def test_plan_not_fresh_refreshes_a_live_heartbeat(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    client.zadd(keys.heartbeats, {BROKER: redis_ms(client) - 5_000})  # registered a while ago
    lua.enqueue("r1")
    before = redis_ms(client)
    assert lua.plan(delivery("r1", "m1", unit(keys.idem("msg:e1"), "m1.0")), pop=True, fresh=False) == ["r"]
    assert_redis_time(lua.heartbeat(), before, redis_ms(client))
    assert lua.ack_set() == {b"r1"}


def test_plan_not_fresh_without_a_heartbeat_is_fenced(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1 = keys.idem("msg:e1")
    lua.enqueue("r1")
    with pytest.raises(redis.ResponseError) as raised:
        lua.plan(delivery("r1", "m1", unit(e1, "m1.0")), pop=True, fresh=False)
    assert str(raised.value).startswith("WAFENCED")
    # Nothing taken, claimed or registered.
    assert lua.queue() == [b"r1"]
    assert not client.exists(lua.acks, keys.heartbeats, keys.stats, e1)


def test_plan_without_pop_is_not_fenced(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1 = keys.idem("msg:e1")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0")), pop=False, fresh=False) == ["r"]
    assert lua.field(e1) == b"c|m1"
    assert not client.exists(keys.heartbeats)


# -- FINISH ----------------------------------------------------------------------------------------


def test_finish_done_sets_the_field_and_refreshes_its_ttl(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1 = keys.idem("msg:e1")
    lua.plan(delivery("r1", "m1", unit(e1, "m1.0")), ttl=1_000)
    ops = Ops()
    ops.done(e1, CB)
    assert lua.finish(ops) == OK
    assert lua.field(e1) == b"d"
    assert 1_000 < client.pttl(e1) <= TTL


def test_finish_retry_waits_in_the_retries_set(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1 = keys.idem("msg:e1")
    lua.enqueue("r1")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0")), pop=True, ttl=1_000) == ["r"]
    due = now_ms() + 30_000
    ops = Ops()
    ops.retry(e1, CB, "m1.0", "next-rid", b"retry message", due)
    assert lua.finish(ops, rid="r1") == OK
    assert lua.field(e1) == b"c|m1.0"  # claimed by the retry's own message
    assert 1_000 < client.pttl(e1) <= TTL
    assert client.zrange(keys.retries, 0, -1, withscores=True) == [(b"next-rid", due)]
    # Its body where the queue's are (r1 itself acked, its body gone); nothing on dramatiq's delay queue.
    assert client.hgetall(keys.messages) == {b"next-rid": b"retry message"}
    assert not client.exists(keys.delay_queue, keys.delay_messages)
    assert lua.queue() == []
    assert lua.ack_set() == set()
    assert lua.peek(10) == []  # not due yet
    # The retry's own message runs it; a redelivery of the delivery does not.
    assert lua.plan(own("next-rid", "m1.0", key=e1)) == ["r"]
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0"))) == ["s"]


def test_finish_dead_dead_letters_the_unit(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1, e2 = keys.idem("msg:e1"), keys.idem("msg:e2")
    lua.plan(delivery("r1", "m1", unit(e1, "m1.0"), unit(e2, "m1.1")), ttl=1_000)
    now = now_ms()
    ops = Ops()
    ops.dead(e1, CB, "m1.0", "dead-1", b"dead message 1")
    ops.dead(e2, CB, "m1.1", "dead-2", b"dead message 2")
    assert lua.finish(ops, now=now) == OK
    assert (lua.field(e1), lua.field(e2)) == (b"x|m1.0", b"x|m1.1")
    assert 1_000 < client.pttl(e1) <= TTL
    assert client.zrange(keys.dead_letters, 0, -1, withscores=True) == [(b"dead-1", now), (b"dead-2", now)]
    assert client.hgetall(keys.dead_messages) == {b"dead-1": b"dead message 1", b"dead-2": b"dead message 2"}
    assert lua.stat("dead_lettered") == 2
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0"))) == ["s"]


def test_finish_wait_parks_an_inline_unit_in_its_lane(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    lane = keys.lane("phone:user")
    e1, e2 = keys.idem("msg:e1"), keys.idem("msg:e2")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0", lane=lane), unit(e2, "m1.1", lane=lane))) == ["rr"]
    ops = Ops()  # the first failed (retried), the second waits behind it
    ops.retry(e1, CB, "m1.0", "retry-1", b"retry", now_ms() + 30_000)
    ops.wait(e2, CB, "m1.1", lane, b"waiting unit")
    assert lua.finish(ops) == OK
    assert lua.field(e2) == b"c|m1.1"
    assert client.hgetall(keys.units) == {b"m1.1": b"waiting unit"}
    assert lua.lane(lane) == [b"m1.0", b"m1.1"]  # the lane is untouched
    assert lua.queue() == []


def test_finish_bury_moves_the_message_body_to_the_dead_letters(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    lua.enqueue("r1", b"rejected body")
    assert lua.plan(own("r1", "m1", key="", field=""), pop=True) == ["s"]
    now = now_ms()
    ops = Ops()
    ops.bury("r1")
    assert lua.finish(ops, rid="r1", now=now) == OK
    assert client.zrange(keys.dead_letters, 0, -1, withscores=True) == [(b"r1", now)]
    assert client.hgetall(keys.dead_messages) == {b"r1": b"rejected body"}
    assert lua.stat("dead_lettered") == 1
    assert not client.exists(keys.messages, lua.acks)  # and acked


def test_finish_bury_without_a_body_buries_nothing(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    client.sadd(lua.acks, "r1")  # taken, but its body is gone
    client.zadd(keys.heartbeats, {BROKER: redis_ms(client)})
    ops = Ops()
    ops.bury("r1")
    assert lua.finish(ops, rid="r1") == OK
    assert not client.exists(keys.dead_letters, keys.dead_messages, keys.stats, lua.acks)


@pytest.mark.parametrize(
    ("lane_items", "stored", "uid", "left", "enqueued"),
    [
        pytest.param(["u1", "u2", "u3"], {"u2": b"m-u2", "u3": b"m-u3"}, "u1", ["u2", "u3"], "u2", id="head"),
        pytest.param(["u1", "u2"], {"u2": b"m-u2"}, "u2", ["u1", "u2"], None, id="not-the-head"),
        pytest.param(["u1", "u2"], {}, "u1", ["u2"], None, id="next-runs-inline"),
        pytest.param(["u1"], {}, "u1", [], None, id="last-in-lane"),
        pytest.param([], {}, "u1", [], None, id="empty-lane"),
    ],
)
@pytest.mark.parametrize("take", [pytest.param(False, id="push"), pytest.param(True, id="take")])
def test_finish_pop_moves_the_lane_on(
    lua: Lua,
    keys: KeyLayout,
    client: redis.Redis,
    lane_items: list[str],
    stored: dict[str, bytes],
    uid: str,
    left: list[str],
    enqueued: str | None,
    take: bool,
) -> None:
    lane = keys.lane("phone:user")
    if lane_items:
        client.rpush(lane, *lane_items)
    if stored:
        client.hset(keys.units, mapping=stored)
    lua.enqueue("other")  # something already on the queue
    ops = Ops()
    ops.pop_lane(lane, uid)
    taken = lua.finish(ops, take=take)
    assert lua.lane(lane) == [item.encode() for item in left]
    remaining = dict(stored)
    if enqueued is None:
        assert taken == OK
        assert lua.queue() == [b"other"]
        assert not client.exists(lua.acks)
    else:
        data = remaining.pop(enqueued)
        assert client.hget(keys.messages, enqueued) == data  # its body where the queue's are
        if take:
            assert taken == [*OK, enqueued.encode(), data, []]
            assert lua.ack_set() == {enqueued.encode()}  # taken by this worker, as if fetched
            assert lua.queue() == [b"other"]
        else:
            assert taken == OK
            assert lua.queue() == [b"other", enqueued.encode()]
            assert not client.exists(lua.acks)
    assert client.hgetall(keys.units) == {k.encode(): v for k, v in remaining.items()}


@pytest.mark.parametrize("take", [pytest.param(False, id="push"), pytest.param(True, id="take")])
def test_finish_drop_at_the_head_moves_the_lane_on_as_pop_does(
    lua: Lua, keys: KeyLayout, client: redis.Redis, take: bool
) -> None:
    lane = keys.lane("phone:user")
    client.rpush(lane, "u1", "u2")
    client.hset(keys.units, "u2", b"m-u2")
    ops = Ops()
    ops.drop_lane(lane, "u1")
    taken = lua.finish(ops, take=take)
    assert lua.lane(lane) == [b"u2"]
    assert client.hget(keys.messages, "u2") == b"m-u2"
    assert taken == ([*OK, b"u2", b"m-u2", []] if take else OK)
    assert lua.queue() == ([] if take else [b"u2"])


def test_finish_drop_behind_others_takes_the_unit_out_of_its_lane(
    lua: Lua, keys: KeyLayout, client: redis.Redis
) -> None:
    """A unit that will not run here (its delivery rejected or skipped) waiting behind others: out of
    the lane, with its stored message. With "pop" it stayed, and the lane stopped at it for ever once
    its turn came (nothing stored to run): the next pop hands over the unit after it instead."""
    lane = keys.lane("phone:user")
    client.rpush(lane, "u1", "u2", "u3")
    client.hset(keys.units, mapping={"u2": b"m-u2", "u3": b"m-u3"})
    ops = Ops()
    ops.drop_lane(lane, "u2")
    assert lua.finish(ops) == OK
    assert lua.lane(lane) == [b"u1", b"u3"]
    assert client.hget(keys.units, "u2") is None
    assert lua.queue() == []
    ops = Ops()
    ops.pop_lane(lane, "u1")
    assert lua.finish(ops) == OK
    assert lua.lane(lane) == [b"u3"]
    assert lua.queue() == [b"u3"]


def test_finish_pop_hands_over_several_lanes_in_order(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    a, b = keys.lane("phone:a"), keys.lane("phone:b")
    client.rpush(a, "a1", "a2")
    client.rpush(b, "b1", "b2")
    client.hset(keys.units, mapping={"a2": b"m-a2", "b2": b"m-b2"})
    ops = Ops()
    ops.pop_lane(a, "a1")
    ops.pop_lane(b, "b1")
    assert lua.finish(ops, take=True) == [*OK, b"a2", b"m-a2", [], b"b2", b"m-b2", []]
    assert lua.ack_set() == {b"a2", b"b2"}
    assert not client.exists(keys.units)


def test_finish_hands_over_a_head_with_the_units_behind_it_read_ahead(
    lua: Lua, keys: KeyLayout, client: redis.Redis
) -> None:
    """take k: the next head is taken (acks) and up to k - 1 units behind it are read, not taken; one
    later call finishes the head and those units in lane order, each record taking the next over."""
    lane = keys.lane("phone:user")
    client.rpush(lane, "u1", "u2", "u3", "u4", "u5")
    client.hset(keys.units, mapping={f"u{i}": f"m-u{i}".encode() for i in range(2, 6)})
    ops = Ops()
    ops.pop_lane(lane, "u1")
    assert lua.finish(ops, take=3) == [*OK, b"u2", b"m-u2", [b"u3", b"m-u3", b"u4", b"m-u4"]]
    assert lua.ack_set() == {b"u2"}  # only the head is taken
    assert client.hkeys(keys.units) and sorted(client.hkeys(keys.units)) == [b"u3", b"u4", b"u5"]
    # The run: u2 (the head), then u3 and u4, in one call; the last record hands u5 over.
    run = []
    for i, take in ((2, 1), (3, 1), (4, 16)):
        ops = Ops()
        ops.done(keys.idem(f"m:e{i}"), CB)
        ops.pop_lane(lane, f"u{i}")
        run.append((ops, f"u{i}", take, BROKER))
    results = lua.finish_many(run)
    assert results[-1] == [*OK, b"u5", b"m-u5", []]
    assert all(r[0] == b"ok" for r in results)
    assert lua.lane(lane) == [b"u5"]
    assert lua.ack_set() == {b"u5"}
    assert not client.exists(keys.units)
    assert client.hkeys(keys.messages) == [b"u5"]  # the run's bodies are gone with their acks


def test_a_run_whose_head_was_taken_over_applies_nothing(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    """If the process was presumed dead (its head requeued by a recovery), no record of the run applies:
    the units behind the head are not moved on, and stay waiting in the lane for the new head's owner."""
    lane = keys.lane("phone:user")
    client.rpush(lane, "u2", "u3")
    client.hset(keys.units, "u3", b"m-u3")
    run = []
    for i in (2, 3):
        ops = Ops()
        ops.done(keys.idem(f"m:e{i}"), CB)
        ops.pop_lane(lane, f"u{i}")
        run.append((ops, f"u{i}", 1, BROKER))
    # u2 is not in our acks and our heartbeat is gone: fenced.
    assert lua.finish_many(run) == [[b"gone"], [b"gone"]]
    assert lua.lane(lane) == [b"u2", b"u3"]
    assert client.hget(keys.units, "u3") == b"m-u3"


@pytest.mark.parametrize(
    ("in_acks", "alive", "rid", "status"),
    [
        pytest.param(True, True, "r1", b"ok", id="in-acks"),
        pytest.param(False, True, "r1", b"again", id="not-in-acks-alive"),
        pytest.param(False, False, "r1", b"gone", id="not-in-acks-presumed-dead"),
        pytest.param(True, True, "", b"ok", id="no-rid"),
    ],
)
def test_finish_acks_the_message(
    lua: Lua, keys: KeyLayout, client: redis.Redis, in_acks: bool, alive: bool, rid: str, status: bytes
) -> None:
    e1 = keys.idem("msg:e1")
    lua.enqueue("r1", b"body 1")
    lua.enqueue("r2", b"body 2")
    if in_acks:
        assert lua.plan(own("r1", "m1", key="", field=""), pop=True) == ["s"]
    if alive:
        client.zadd(keys.heartbeats, {BROKER: redis_ms(client)})
    client.sadd(lua.acks, "r2")
    ops = Ops()
    ops.done(e1, CB)
    assert lua.finish(ops, rid=rid) == [status]
    bodies = client.hgetall(keys.messages)
    if rid and status == b"ok":
        assert lua.ack_set() == {b"r2"}
        assert bodies == {b"r2": b"body 2"}
    else:
        assert lua.ack_set() == ({b"r1", b"r2"} if in_acks else {b"r2"})
        assert bodies == {b"r1": b"body 1", b"r2": b"body 2"}  # nothing deleted
    # The ops are applied with the ack, or not at all.
    assert lua.field(e1) == (b"d" if status == b"ok" else None)


def test_finish_applies_ops_then_acks(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1, e2 = keys.idem("msg:e1"), keys.idem("msg:e2")
    lua.enqueue("r1")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0"), unit(e2, "m1.1")), pop=True) == ["rr"]
    ops = Ops()
    ops.done(e1, CB)
    ops.dead(e2, CB, "m1.1", "dead-1", b"dead")
    assert lua.finish(ops, rid="r1") == OK
    assert (lua.field(e1), lua.field(e2)) == (b"d", b"x|m1.1")
    assert not client.exists(lua.acks)
    assert not client.exists(keys.messages)
    # A redelivery of the same delivery runs nothing again.
    lua.enqueue("r1")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0"), unit(e2, "m1.1")), pop=True) == ["ss"]


def test_finish_is_applied_once_then_answers_again(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1, e2 = keys.idem("msg:e1"), keys.idem("msg:e2")
    lua.enqueue("r1")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0"), unit(e2, "m1.1")), pop=True) == ["rr"]
    ops = Ops()
    ops.retry(e1, CB, "m1.0", "retry-1", b"retry message", 0)  # due at once
    ops.dead(e2, CB, "m1.1", "dead-1", b"dead message")
    assert lua.finish(ops, rid="r1") == OK
    # The retry is promoted to the queue and runs (fine) before the reply of the FINISH reaches the worker...
    assert lua.peek(10) == [[b"retry-1"], [b"retry message"]]
    assert not client.exists(keys.retries)
    client.hset(e1, CB, "d")
    # ...which, having lost that reply, sends the same FINISH again: nothing is applied twice.
    assert lua.finish(ops, rid="r1") == [b"again"]
    assert not client.exists(keys.retries)  # the retry is not pushed again
    assert lua.queue() == [b"retry-1"]
    assert lua.field(e1) == b"d"  # not claimed back for a retry that already ran
    assert lua.stat("dead_lettered") == 1
    assert client.zcard(keys.dead_letters) == 1
    assert client.hgetall(keys.messages) == {b"retry-1": b"retry message"}


def test_finish_of_a_process_presumed_dead_is_gone(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    lane = keys.lane("phone:user")
    e1, e2 = keys.idem("msg:e1"), keys.idem("msg:e2")
    lua.enqueue("r1", b"body 1")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0", lane=lane), unit(e2, "m1.1")), pop=True) == ["rr"]
    client.rpush(lane, "m2.0")
    client.hset(keys.units, "m2.0", b"unit m2.0")
    # Another worker's RECOVER took it over: heartbeat removed, acks deleted, message requeued.
    client.zrem(keys.heartbeats, BROKER)
    client.delete(lua.acks)
    client.lpush(keys.queue, "r1")
    ops = Ops()
    ops.done(e1, CB)
    ops.pop_lane(lane, "m1.0")
    ops.retry(e2, CB, "m1.1", "retry-1", b"retry", 0)
    ops.dead(e2, CB, "m1.1", "dead-1", b"dead")
    ops.bury("r1")
    assert lua.finish(ops, rid="r1", take=True) == [b"gone"]
    # Nothing applied: the copy that runs elsewhere is the only one that counts.
    assert (lua.field(e1), lua.field(e2)) == (b"c|m1", b"c|m1")
    assert lua.lane(lane) == [b"m1.0", b"m2.0"]
    assert client.hgetall(keys.units) == {b"m2.0": b"unit m2.0"}
    assert lua.queue() == [b"r1"]
    assert client.hgetall(keys.messages) == {b"r1": b"body 1"}
    assert not client.exists(lua.acks, keys.retries, keys.dead_letters, keys.dead_messages, keys.heartbeats)
    assert lua.stat("dead_lettered") == 0


def test_finish_unknown_op_is_an_error(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1 = keys.idem("msg:e1")
    lua.enqueue("r1")
    lua.plan(delivery("r1", "m1", unit(e1, "m1.0")), pop=True)
    with pytest.raises(KeyError):
        Ops().add("bogus")  # the builder never produces one
    ops = Ops()
    ops.append("bogus")  # as an older or newer Python side could send
    ops.n += 1
    with pytest.raises(redis.ResponseError, match="unknown op bogus"):
        lua.finish(ops, rid="r1")
    assert lua.ack_set() == {b"r1"}  # not acked
    assert client.hget(keys.messages, "r1") == b"body"
    assert lua.field(e1) == b"c|m1"


# -- PLAN and FINISH together: a lane handed over ---------------------------------------------------


@pytest.mark.parametrize("take", [pytest.param(False, id="through-the-queue"), pytest.param(True, id="taken")])
def test_lane_head_is_handed_over_and_runs(lua: Lua, keys: KeyLayout, client: redis.Redis, take: bool) -> None:
    lane = keys.lane("phone:user")
    e1, e2 = keys.idem("msg:e1"), keys.idem("msg:e2")
    lua.enqueue("r1")
    lua.enqueue("r2")
    first = delivery("r1", "m1", unit(e1, "m1.0", lane=lane))
    second = delivery("r2", "m2", unit(e2, "m2.0", lane=lane))
    assert lua.plan(first, second, pop=True) == ["r", "q"]
    # The delivery that queued it has nothing to run: its FINISH stores the unit's message.
    assert stored(lua, (e2, "m2.0", lane, b"unit m2.0"), rid="r2") == OK
    # The waiting unit's own message is not runnable before its turn.
    assert lua.plan(own("m2.0", "m2.0", key=e2, lane=lane)) == ["s"]
    ops = Ops()
    ops.done(e1, CB)
    ops.pop_lane(lane, "m1.0")
    taken = lua.finish(ops, rid="r1", take=take)
    if take:
        assert taken == [*OK, b"m2.0", b"unit m2.0", []]
        assert lua.ack_set() == {b"m2.0"}
        assert lua.queue() == []
    else:
        assert taken == OK
        assert lua.queue() == [b"m2.0"]
        assert lua.plan(own("m2.0", "m2.0", key=e2, lane=lane), pop=True, fresh=False) == ["r"]
        assert lua.ack_set() == {b"m2.0"}
    assert lua.plan(own("m2.0", "m2.0", key=e2, lane=lane)) == ["r"]
    done = Ops()
    done.done(e2, CB)
    done.pop_lane(lane, "m2.0")
    assert lua.finish(done, rid="m2.0") == OK
    assert not client.exists(lane, keys.units, lua.acks, keys.messages)
    assert (lua.field(e1), lua.field(e2)) == (b"d", b"d")


# -- PEEK ------------------------------------------------------------------------------------------


def test_peek_returns_the_head_without_taking_it(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    assert lua.peek(5) == []
    for n in range(3):
        lua.enqueue(f"r{n}", f"body {n}".encode())
    assert lua.peek(2) == [[b"r0", b"r1"], [b"body 0", b"body 1"]]
    assert lua.peek(10) == [[b"r0", b"r1", b"r2"], [b"body 0", b"body 1", b"body 2"]]
    assert lua.queue() == [b"r0", b"r1", b"r2"]


def test_peek_a_message_without_body(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    client.rpush(keys.queue, "no-body")
    lua.enqueue("r1", b"body 1")
    assert lua.peek(2) == [[b"no-body", b"r1"], [None, b"body 1"]]


def test_peek_moves_due_retries_to_the_queue_tail_in_due_order(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    lua.enqueue("r0", b"body 0")
    now = redis_ms(client)
    retries = {"late": now - 10, "early": now - 60_000, "just-due": now, "future": now + 60_000}
    client.hset(keys.messages, mapping={rid: f"retry {rid}".encode() for rid in retries})
    client.zadd(keys.retries, retries)
    due = [b"early", b"late", b"just-due"]  # score <= Redis's TIME, in due order
    assert lua.peek(10) == [[b"r0", *due], [b"body 0", *(b"retry " + rid for rid in due)]]
    assert lua.queue() == [b"r0", *due]
    assert client.zrange(keys.retries, 0, -1) == [b"future"]  # the promoted ones left the set
    assert lua.peek(10) == [[b"r0", *due], [b"body 0", *(b"retry " + rid for rid in due)]]  # not twice


def test_peek_promotes_due_retries_onto_an_empty_queue(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    client.hset(keys.messages, "retry-1", b"retry")
    client.zadd(keys.retries, {"retry-1": redis_ms(client) - 1})
    assert lua.peek(1) == [[b"retry-1"], [b"retry"]]
    assert not client.exists(keys.retries)


# -- RECOVER ---------------------------------------------------------------------------------------


def test_recover_registers_a_fresh_process_on_redis_clock(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    before = redis_ms(client)
    assert lua.recover(BROKER, fresh=True) == ["ok", 0, ""]
    assert_redis_time(lua.heartbeat(), before, redis_ms(client))


def test_recover_heartbeats_on_redis_clock(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    client.zadd(keys.heartbeats, {BROKER: redis_ms(client) - TIMEOUT // 2})
    before = redis_ms(client)
    assert lua.recover(BROKER, fresh=False) == ["ok", 0, ""]
    assert_redis_time(lua.heartbeat(), before, redis_ms(client))


def test_recover_requeues_what_a_dead_process_held_at_the_queue_head(
    lua: Lua, keys: KeyLayout, client: redis.Redis
) -> None:
    now = redis_ms(client)
    alive = "alive-broker"
    client.zadd(keys.heartbeats, {BROKER: now - 1_000, OTHER: now - TIMEOUT - 1_000, alive: now - TIMEOUT // 2})
    lua.enqueue("x", b"body x")
    client.hset(keys.messages, mapping={"a": b"body a", "b": b"body b", "c": b"body c"})
    client.sadd(keys.acks(OTHER), "a", "b", "no-body")
    client.sadd(keys.acks(alive), "c")
    assert lua.recover(BROKER, fresh=False) == ["ok", 2, ""]
    queue = lua.queue()
    assert set(queue[:2]) == {b"a", b"b"} and queue[2:] == [b"x"]  # at the head; a message without body is not
    assert not client.exists(keys.acks(OTHER))
    assert lua.heartbeat(OTHER) is None
    # A process whose heartbeat is not older than the timeout keeps what it holds.
    assert lua.ack_set(alive) == {b"c"}
    assert lua.heartbeat(alive) == now - TIMEOUT // 2
    assert client.hlen(keys.messages) == 4  # bodies untouched
    assert lua.recover(BROKER, fresh=False) == ["ok", 0, ""]  # nothing twice


def test_recover_takes_over_nobody_when_its_own_heartbeat_is_stale(
    lua: Lua, keys: KeyLayout, client: redis.Redis
) -> None:
    now = redis_ms(client)
    # Neither could heartbeat for longer than the timeout (Redis was out of reach for both).
    client.zadd(keys.heartbeats, {BROKER: now - TIMEOUT - 1_000, OTHER: now - TIMEOUT - 2_000})
    client.hset(keys.messages, "a", b"body a")
    client.sadd(keys.acks(OTHER), "a")
    before = redis_ms(client)
    assert lua.recover(BROKER, fresh=False) == ["ok", 0, ""]
    assert lua.ack_set(OTHER) == {b"a"}
    assert lua.heartbeat(OTHER) is not None
    assert lua.queue() == []
    assert_redis_time(lua.heartbeat(), before, redis_ms(client))  # its own heartbeat is refreshed all the same
    # The other one had its chance to heartbeat again: now that this one's heartbeat is recent, it is dead.
    assert lua.recover(BROKER, fresh=False) == ["ok", 1, ""]
    assert lua.queue() == [b"a"]
    assert not client.exists(keys.acks(OTHER))


def test_recover_a_fresh_process_takes_over_nobody_on_its_first_heartbeat(
    lua: Lua, keys: KeyLayout, client: redis.Redis
) -> None:
    client.zadd(keys.heartbeats, {OTHER: redis_ms(client) - TIMEOUT - 1_000})
    client.hset(keys.messages, "a", b"body a")
    client.sadd(keys.acks(OTHER), "a")
    assert lua.recover(BROKER, fresh=True) == ["ok", 0, ""]  # no previous heartbeat of its own: not recent
    assert lua.ack_set(OTHER) == {b"a"}
    assert lua.recover(BROKER, fresh=False) == ["ok", 1, ""]
    assert lua.queue() == [b"a"]


def test_recover_of_a_process_without_heartbeat_is_fenced(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    now = redis_ms(client)
    client.set(keys.epoch, "epoch-1")
    client.zadd(keys.heartbeats, {OTHER: now - TIMEOUT - 1_000})
    client.hset(keys.messages, "a", b"body a")
    client.sadd(keys.acks(OTHER), "a")
    client.zadd(keys.dead_letters, {"old": now - DEAD_TTL - 1_000})
    assert lua.recover(BROKER, fresh=False) == ["fenced", 0, "epoch-1"]
    # Neither registered nor recovering anything.
    assert lua.heartbeat() is None
    assert lua.ack_set(OTHER) == {b"a"}
    assert lua.queue() == []
    assert client.zcard(keys.dead_letters) == 1


def test_recover_expires_old_dead_letters(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    now = redis_ms(client)
    client.zadd(keys.dead_letters, {"old": now - DEAD_TTL - 1_000, "recent": now - 1_000})
    client.hset(keys.dead_messages, mapping={"old": b"old", "recent": b"recent"})
    assert lua.recover(BROKER, fresh=True) == ["ok", 0, ""]
    assert client.zrange(keys.dead_letters, 0, -1) == [b"recent"]
    assert client.hgetall(keys.dead_messages) == {b"recent": b"recent"}


@pytest.mark.parametrize("marker", [pytest.param(None, id="absent"), pytest.param("epoch-1", id="present")])
def test_recover_returns_the_epoch_marker(lua: Lua, keys: KeyLayout, client: redis.Redis, marker: str | None) -> None:
    if marker is not None:
        client.set(keys.epoch, marker)
    assert lua.recover(BROKER, fresh=True) == ["ok", 0, marker or ""]
    assert client.get(keys.epoch) == (marker.encode() if marker else None)  # without a candidate: never written


def test_recover_writes_a_missing_marker_once(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    """The first worker writes the marker inside RECOVER (allowed when Redis is full); later ones adopt it."""
    assert lua.recover(BROKER, fresh=True, candidate="first", created=True) == ["ok", 0, "first", "1"]
    assert lua.recover(OTHER, fresh=True, candidate="second", created=True) == ["ok", 0, "first", "0"]
    assert client.get(keys.epoch) == b"first"


def test_a_process_presumed_dead_is_fenced_everywhere(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1 = keys.idem("msg:e1")
    lua.enqueue("r1")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0")), pop=True) == ["r"]
    assert lua.recover(OTHER, fresh=True) == ["ok", 0, ""]  # a live worker
    client.zadd(keys.heartbeats, {BROKER: redis_ms(client) - TIMEOUT - 1_000})  # paused for too long
    assert lua.recover(OTHER, fresh=False) == ["ok", 1, ""]
    assert lua.queue() == [b"r1"]
    ops = Ops()
    ops.done(e1, CB)
    assert lua.finish(ops, rid="r1") == [b"gone"]
    assert lua.field(e1) == b"c|m1"
    assert lua.recover(BROKER, fresh=False)[0] == "fenced"
    with pytest.raises(redis.ResponseError, match=r"^WAFENCED"):
        lua.plan(delivery("r1", "m1", unit(e1, "m1.0")), pop=True, fresh=False)
    assert lua.queue() == [b"r1"]  # for the live worker to take


# -- REQUEUE ---------------------------------------------------------------------------------------


def test_requeue_puts_messages_back_at_the_head_in_order(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    lua.enqueue("x", b"body x")
    for rid in ("a", "b", "c"):
        lua.take(rid, f"body {rid}".encode())
    client.sadd(lua.acks, "no-body")
    client.hset(keys.messages, "elsewhere", b"not ours")  # has a body, but is not in our acks
    assert lua.requeue("c", "a", "no-body", "elsewhere") == 2
    assert lua.queue() == [b"c", b"a", b"x"]
    assert lua.ack_set() == {b"b"}
    assert client.hlen(keys.messages) == 5  # bodies stay with the queue
    assert lua.requeue("c", "a") == 0  # not in the acks any more: not pushed twice
    assert lua.queue() == [b"c", b"a", b"x"]


def test_requeue_nothing(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    assert lua.requeue() == 0
    assert not client.exists(keys.queue)


# -- the scripts and the schema --------------------------------------------------------------------


def test_scripts_registers_every_script(client: redis.Redis) -> None:
    registered = scripts.Scripts(client)
    for name in scripts.NAMES:
        script = getattr(registered, name)
        assert script.script == scripts.load(name)  # Redis 7 here: with the flags line
        assert (LUA / f"{name}.lua").exists()
    # Files named _*.lua are pieces included by the others (--@include), not scripts.
    assert sorted(p.stem for p in LUA.glob("[!_]*.lua")) == sorted(scripts.NAMES)
    for name in scripts.NAMES:
        assert "--@" not in scripts.load(name), name  # every directive expanded
    with pytest.raises(AttributeError):
        registered._missing  # noqa: B018


@pytest.mark.parametrize("name", scripts.NAMES)
def test_load_keeps_or_drops_the_flags_line(name: str) -> None:
    with_flags, without = scripts.load(name), scripts.load(name, flags=False)
    assert with_flags.startswith("#!lua flags=allow-oom\n")
    assert not without.startswith("#!")
    assert with_flags.split("\n", 1)[1] == without
    assert getattr(scripts, name.upper()) == with_flags
    for source in (with_flags, without):  # all generated at load time
        assert "--@bind" not in source
        assert "--@now" not in source


def test_scripts_without_the_flags_line_run_too(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    peek = client.register_script(scripts.load("peek", flags=False))
    lua.enqueue("r1", b"body 1")
    assert peek(keys=[keys.queue, keys.messages, keys.retries], args=[5]) == [[b"r1"], [b"body 1"]]


def test_now_reads_redis_time() -> None:
    for name in ("peek", "plan", "recover"):
        assert 'redis.call("time")' in scripts.load(name), name


def test_ops_records_read_back_what_was_built() -> None:
    ops = Ops()
    ops.done("k1", "cb")
    ops.retry("k2", "cb", "u2", "rid2", b"retry", 1234)
    ops.dead("k3", "cb", "u3", "rid3", b"dead")
    ops.wait("k4", "cb", "u4", "lane4", b"wait")
    ops.pop_lane("lane", "u5")
    ops.drop_lane("lane", "u7")
    ops.bury("rid6")
    assert ops.records() == [
        ("done", {"key": "k1", "field": "cb", "hour": "", "shard": 0, "digest": ""}),
        ("retry", {"key": "k2", "field": "cb", "owner": "u2", "next_rid": "rid2", "data": b"retry", "due": 1234}),
        ("dead", {"key": "k3", "field": "cb", "owner": "u3", "dead_rid": "rid3", "data": b"dead"}),
        ("wait", {"key": "k4", "field": "cb", "uid": "u4", "lane": "lane4", "data": b"wait"}),
        ("pop", {"lane": "lane", "uid": "u5"}),
        ("drop", {"lane": "lane", "uid": "u7"}),
        ("bury", {"buried": "rid6"}),
    ]
    assert len(ops) == sum(1 + len(OPS[code]) for code, _ in ops.records())
    assert [code for code, _ in ops.records()] == list(OPS)  # every op has its builder


def test_records_are_flat_in_schema_order() -> None:
    assert plan_message(group="g", count=2, mid="m", rid="r") == ["r", "m", 2, "g"]
    assert plan_unit(stale="s", uid="u", lane="l", field="f", key="k", hour="1", shard=2, digest="3", after="a") == [
        "k", "f", "l", "u", "s", "1", 2, "3", "a",
    ]  # fmt: skip
    assert plan_own(lane="l", field="f", key="k") == ["k", "f", "l"]


def _build_op(**values: Any) -> Any:
    return Ops().add("retry", **values)


@pytest.mark.parametrize(
    ("build", "fields"),
    [
        pytest.param(plan_message, finish.PLAN_MESSAGE, id="plan_message"),
        pytest.param(plan_unit, finish.PLAN_UNIT, id="plan_unit"),
        pytest.param(plan_own, finish.PLAN_OWN, id="plan_own"),
        pytest.param(_build_op, OPS["retry"], id="op"),
    ],
)
@pytest.mark.parametrize("change", ["missing", "extra"])
def test_a_record_with_a_missing_or_extra_field_is_refused(build: Any, fields: tuple[str, ...], change: str) -> None:
    values: dict[str, Any] = dict.fromkeys(fields, "v")
    build(**values)  # complete: accepted
    if change == "missing":
        del values[fields[-1]]
    else:
        values["unexpected"] = "v"
    with pytest.raises(TypeError, match="expected fields"):
        build(**values)


def test_every_op_code_is_handled_by_finish_lua() -> None:
    source = (LUA / "finish.lua").read_text(encoding="utf-8")
    handled = re.findall(r'op == "(\w+)"', source)
    assert sorted(handled) == sorted(OPS)
    # Each op's branch reads that op's record.
    branches = re.findall(r'op == "(\w+)" then\s*\n\s*--@bind (\w+)', source)
    assert branches == [(code, code) for code in handled]


def test_every_bind_names_a_record() -> None:
    bound = set()
    for path in sorted(LUA.glob("*.lua")):
        names = re.findall(r"--@bind (\w+)", path.read_text(encoding="utf-8"))
        assert set(names) <= RECORDS.keys(), path.name
        bound.update(names)
    assert bound == RECORDS.keys()  # and every record is read by some script


def test_plan_refuses_a_redis_whose_epoch_marker_changed(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    """A Redis that lost its data (the marker this process saw is gone): nothing is taken or claimed."""
    lua.enqueue("r1")
    e1 = keys.idem("msg:e1")
    client.set(keys.epoch, "seen")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0")), pop=True, epoch="seen") == ["r"]
    lua.enqueue("r2")
    client.delete(keys.epoch)
    with pytest.raises(redis.ResponseError, match="WALOST"):
        lua.plan(delivery("r2", "m2", unit(keys.idem("msg:e2"), "m2.0")), pop=True, fresh=False, epoch="seen")
    assert lua.queue() == [b"r2"] and lua.field(keys.idem("msg:e2")) is None


def test_finish_a_batch_applies_each_message_on_its_own(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    """Coalesced FINISH: each message of the batch is fenced on its own; one gone does not stop the others."""
    client.zadd(keys.heartbeats, {BROKER: now_ms()})
    for rid in ("r1", "r3"):
        lua.enqueue(rid)
        client.sadd(lua.acks, rid)
    e1, e2, e3 = keys.idem("msg:b1"), keys.idem("msg:b2"), keys.idem("msg:b3")
    one, two, three = Ops(), Ops(), Ops()
    one.done(e1, CB)
    two.done(e2, CB)  # r2 is not in the acks: an earlier call applied it
    three.done(e3, CB)
    three.done(e3, "other")
    results = lua.finish_many([(one, "r1", False, BROKER), (two, "r2", False, BROKER), (three, "r3", False, BROKER)])
    assert [r[0] for r in results] == [b"ok", b"again", b"ok"]
    assert (lua.field(e1), lua.field(e2), lua.field(e3), lua.field(e3, "other")) == (b"d", None, b"d", b"d")
    assert lua.ack_set() == set() and client.hlen(keys.messages) == 0


def test_plan_units_of_one_conversation_in_one_batch_all_run(lua: Lua, keys: KeyLayout) -> None:
    """Deliveries PLAN puts in one batch group run their units of a lane in order in that batch's
    thread; outside the group the lane's later units wait as before."""
    lane = keys.lane("phone:user")
    e = [keys.idem(f"msg:g{i}") for i in range(4)]
    messages = [delivery(f"r{i}", f"m{i}", unit(e[i], f"m{i}.0", lane=lane), group="g0") for i in range(3)]
    messages.append(delivery("r3", "m3", unit(e[3], "m3.0", lane=lane), group="g1"))
    assert lua.plan(*messages) == ["r", "r", "r", "q"]
    assert lua.lane(lane) == [b"m0.0", b"m1.0", b"m2.0", b"m3.0"]
    stored(lua, (e[3], "m3.0", lane, b"d"))
    ops = Ops()
    for i in range(3):
        ops.done(e[i], CB)
        ops.pop_lane(lane, f"m{i}.0")
    lua.finish(ops)
    assert lua.lane(lane) == [b"m3.0"] and lua.queue() == [b"m3.0"]  # the next head, enqueued


def test_plan_again_a_batch_member_behind_its_lane_head_waits(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    """A batch ran two deliveries of one conversation (both claimed, both in the lane), then its
    worker died: planned again apart, the second waits for its turn instead of running beside the first."""
    lane = keys.lane("phone:user")
    e0, e1 = keys.idem("msg:k0"), keys.idem("msg:k1")
    first = delivery("r0", "m0", unit(e0, "m0.0", lane=lane), group="g0")
    second = delivery("r1", "m1", unit(e1, "m1.0", lane=lane), group="g0")
    assert lua.plan(first, second) == ["r", "r"]
    # Requeued by a recovery, planned again in two fetches (no common group).
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0", lane=lane))) == ["q"]
    stored(lua, (e1, "m1.0", lane, b"d1"))
    assert client.hget(keys.units, "m1.0") == b"d1" and lua.field(e1) == b"c|m1.0"
    assert lua.plan(delivery("r0", "m0", unit(e0, "m0.0", lane=lane))) == ["r"]  # the head runs
    ops = Ops()
    ops.done(e0, CB)
    ops.pop_lane(lane, "m0.0")
    lua.finish(ops)
    assert lua.queue() == [b"m1.0"]  # then the second, at its turn
    # Out of its lane already (a dead-letter replay after the lane moved on): it runs.
    client.delete(lane)
    client.hset(e1, CB, "c|m9")
    assert lua.plan(delivery("r9", "m9", unit(e1, "m9.0", lane=lane))) == ["r"]


def test_plan_again_out_of_order_runs_only_in_lane_order(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    """A dead worker's batch of one conversation comes back in another order (recovery requeues a
    set): planned again as one batch, only units that follow the lane's order run; the rest wait."""
    lane = keys.lane("phone:user")
    e = [keys.idem(f"msg:o{i}") for i in range(3)]

    def message(i: int) -> list[Any]:
        return delivery(f"r{i}", f"m{i}", unit(e[i], f"m{i}.0", lane=lane), group="g")

    assert lua.plan(message(0), message(1), message(2)) == ["r", "r", "r"]  # the first batch (its worker died)
    assert lua.plan(message(2), message(0), message(1)) == ["q", "r", "r"]
    stored(lua, (e[2], "m2.0", lane, b"d2"))
    assert client.hget(keys.units, "m2.0") == b"d2"
    ops = Ops()
    for i in (0, 1):
        ops.done(e[i], CB)
        ops.pop_lane(lane, f"m{i}.0")
    lua.finish(ops)
    assert lua.lane(lane) == [b"m2.0"] and lua.queue() == [b"m2.0"]


# -- done-marks ------------------------------------------------------------------------------------

#: The current hour, set anew for each test (a bucket of an hour already over expires at once with the
#: short TTL these tests use: a module-level value went stale when a run crossed an hour).
HOUR = int(time.time()) // 3600


@pytest.fixture(autouse=True)
def _this_hour() -> None:
    global HOUR
    HOUR = int(time.time()) // 3600


def mark(n: int, hour: int | None = None) -> Mark:
    """A done-mark with a digest of our choosing (marks.mark_of hashes; here the shard bits are n)."""
    return (str(HOUR if hour is None else hour), n, str(-(2**62) + n * 7919))


def mark_sets(client: redis.Redis, keys: KeyLayout, hour: int | None = None) -> list[bytes]:
    return sorted(k for k in client.scan_iter(f"{keys.done_marks}{HOUR if hour is None else hour}:*"))


def test_done_with_a_mark_drops_the_claim_and_writes_the_mark(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1 = keys.idem("m:e1")
    lua.enqueue("r1")
    assert lua.plan(delivery("r1", "m1", unit(e1, "m1.0", mark=mark(5))), pop=True) == ["r"]
    assert lua.field(e1) == b"c|m1"  # claimed while it runs
    ops = Ops()
    ops.done(e1, CB, mark(5))
    assert lua.finish(ops, rid="r1") == OK
    assert not client.exists(e1)  # no hash left for a done event
    (only,) = mark_sets(client, keys)
    assert only == f"{keys.done_marks}{HOUR}:0:0".encode()
    assert client.smembers(only) == {mark(5)[2].encode()}
    assert client.object("encoding", only) == b"intset"
    # The whole hour expires together, ttl after the hour ends (PEXPIRETIME, Redis 7).
    assert client.execute_command("PEXPIRETIME", only) == (HOUR + 1) * 3_600_000 + TTL


def test_a_redelivery_of_a_marked_unit_is_a_duplicate(lua: Lua, keys: KeyLayout) -> None:
    e1 = keys.idem("m:e1")
    lua.plan(delivery("r1", "m1", unit(e1, "m1.0", mark=mark(5))))
    ops = Ops()
    ops.done(e1, CB, mark(5))
    lua.finish(ops)
    assert lua.plan(delivery("r2", "m2", unit(e1, "m2.0", mark=mark(5)))) == ["s"]
    assert lua.stat("duplicates") == 1
    # Another unit of the same event (another callback: another digest) still runs.
    assert lua.plan(delivery("r3", "m3", unit(e1, "m3.0", field="other", mark=mark(6)))) == ["r"]


def test_a_unit_of_another_hour_is_not_taken_for_done(lua: Lua, keys: KeyLayout) -> None:
    e1 = keys.idem("m:e1")
    lua.plan(delivery("r1", "m1", unit(e1, "m1.0", mark=mark(5))))
    ops = Ops()
    ops.done(e1, CB, mark(5))
    lua.finish(ops)
    assert lua.plan(delivery("r2", "m2", unit(e1, "m2.0", mark=mark(5, HOUR - 1)))) == ["r"]


def test_marks_split_into_deeper_levels_and_are_all_found(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    from wa_middleware.worker.marks import FANOUT, SPLIT_AT

    n = SPLIT_AT + 2 * FANOUT * SPLIT_AT // 3  # fills level 0, then part of level 1
    for start in range(0, n, 500):
        ops = Ops()
        for i in range(start, min(n, start + 500)):
            ops.done(keys.idem(f"m:e{i}"), CB, mark(i))
        assert lua.finish(ops) == OK
    sets = mark_sets(client, keys)
    level_key = f"{keys.done_marks}{HOUR}".encode()
    assert client.get(level_key) == b"1"
    assert client.execute_command("PEXPIRETIME", level_key) == (HOUR + 1) * 3_600_000 + TTL
    assert len(sets) == 1 + FANOUT
    for key in sets:
        assert client.object("encoding", key) == b"intset"
        assert client.scard(key) <= SPLIT_AT
    assert sum(client.scard(key) for key in sets) == n
    # Every mark is found, the ones in level 0 and the ones in level 1.
    for i in (0, SPLIT_AT - 1, SPLIT_AT, n - 1):
        assert lua.plan(delivery(f"r{i}", f"x{i}", unit(keys.idem(f"m:e{i}"), f"x{i}.0", mark=mark(i)))) == ["s"], i
    assert lua.plan(delivery("rn", "xn", unit(keys.idem("m:new"), "xn.0", mark=mark(n)))) == ["r"]


def test_a_stale_status_with_a_mark_is_marked_done(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    read, delivered = keys.idem("s:wamid.1:read"), keys.idem("s:wamid.1:delivered")
    assert lua.plan(delivery("r1", "m1", unit(read, "m1.0", stale=progress(3, "wamid.1"), mark=mark(1)))) == ["r"]
    assert lua.plan(delivery("r2", "m2", unit(delivered, "m2.0", stale=progress(2, "wamid.1"), mark=mark(2)))) == ["t"]
    assert not client.exists(delivered)
    assert lua.plan(delivery("r3", "m3", unit(delivered, "m3.0", stale=progress(2, "wamid.1"), mark=mark(2)))) == ["s"]


def test_a_failed_unit_keeps_its_claim_until_its_retry_is_done(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    e1 = keys.idem("m:e1")
    lua.enqueue("r1")
    lua.plan(delivery("r1", "m1", unit(e1, "m1.0", mark=mark(5))), pop=True)
    ops = Ops()
    ops.retry(e1, CB, "m1.0", "next", b"retry", now_ms() + 60_000)
    lua.finish(ops, rid="r1")
    assert lua.field(e1) == b"c|m1.0"
    assert lua.plan(delivery("r2", "m2", unit(e1, "m2.0", mark=mark(5)))) == ["s"]  # claimed by the retry
    assert mark_sets(client, keys) == []


def test_done_marks_cost_under_24_bytes_an_event(lua: Lua, keys: KeyLayout, client: redis.Redis) -> None:
    """The memory the once-per-event state keeps after the queue drained, by Redis's own count
    (MEMORY USAGE of every key left), for 20,000 events of one hour with real digests."""
    from wa_middleware.events.decode import Event
    from wa_middleware.events.models import EventContext, Status
    from wa_middleware.worker.marks import mark_of

    now = time.time()
    n = 20_000
    for start in range(0, n, 1000):
        plan_args: list[Any] = []
        ops = Ops()
        for i in range(start, start + 1000):
            status = Status(id=f"wamid.{i}", status="delivered", timestamp=str(int(now)))
            event = Event("status", status, EventContext())
            key = keys.idem(f"s:wamid.{i}:delivered")
            m = mark_of(event, key, CB, now=now, ttl=TTL / 1000 + 7200)
            assert m[0]
            plan_args.append(delivery(f"r{i}", f"m{i}", unit(key, f"m{i}.0", mark=m)))
            ops.done(key, CB, m)
        assert lua.plan(*plan_args) == ["r"] * 1000
        assert lua.finish(ops) == OK
    left = list(client.scan_iter(f"{keys.prefix}:*"))
    assert not [k for k in left if b":idem:" in k]
    used = sum(int(client.memory_usage(k, samples=0) or 0) for k in left)
    assert used / n <= 24, f"{used / n:.1f} bytes an event"


def test_a_mark_of_the_hour_it_was_written_is_found_over_the_whole_window(
    lua: Lua, keys: KeyLayout, client: redis.Redis
) -> None:
    """Events without a time of their own are marked in the hour they ran ("w<hour>"); a lookup from a
    later hour checks back over the window's hours (a window of 3 hours here)."""
    ttl = 3 * 3_600_000
    e1 = keys.idem("h:e1")
    ops = Ops()
    ops.done(e1, CB, (f"w{HOUR - 1}", 9, "-77"))
    assert lua.finish(ops, ttl=ttl) == OK
    assert client.smembers(f"{keys.done_marks}w{HOUR - 1}:0:0") == {b"-77"}
    for later in (HOUR - 1, HOUR, HOUR + 2):
        assert lua.plan(delivery("r", "m", unit(e1, "m.0", mark=(f"w{later}", 9, "-77"))), ttl=ttl) == ["s"], later
    assert lua.plan(delivery("r", "m", unit(e1, "m.0", mark=(f"w{HOUR + 3}", 9, "-77"))), ttl=ttl) == ["r"]  # past it


# -- follow-ups: a unit claimed right behind one this process runs -----------------------------------


def test_plan_a_unit_right_behind_its_after_runs_in_the_same_work_item(lua: Lua, keys: KeyLayout) -> None:
    """``after`` names the unit this process last claimed to run in the lane: right behind it (an
    earlier call's "r", or this call's), the unit is claimed by its delivery to run ("r"); with
    anything between them, or behind a unit that waits, it waits as ever."""
    lane = keys.lane("phone:user")
    e = [keys.idem(f"msg:a{i}") for i in range(6)]
    assert lua.plan(delivery("r0", "m0", unit(e[0], "m0.0", lane=lane))) == ["r"]
    # Behind m0.0, which an earlier call claimed to run: it follows it.
    assert lua.plan(delivery("r1", "m1", unit(e[1], "m1.0", lane=lane, after="m0.0"))) == ["r"]
    assert lua.field(e[1]) == b"c|m1"
    # In one call, behind a unit of this call that runs: it follows too.
    follow = [delivery(f"r{i}", f"m{i}", unit(e[i], f"m{i}.0", lane=lane, after=f"m{i - 1}.0")) for i in (2, 3)]
    assert lua.plan(*follow) == ["r", "r"]
    # Another process's unit came between: the after is stale, so the unit waits.
    assert lua.plan(delivery("r4", "m4", unit(e[4], "m4.0", lane=lane))) == ["q"]
    assert lua.plan(delivery("r5", "m5", unit(e[5], "m5.0", lane=lane, after="m3.0"))) == ["q"]
    assert lua.lane(lane) == [f"m{i}.0".encode() for i in range(6)]


def test_plan_a_unit_behind_a_waiting_one_of_the_same_call_waits(lua: Lua, keys: KeyLayout) -> None:
    lane = keys.lane("phone:user")
    e0, e1, e2 = keys.idem("msg:w0"), keys.idem("msg:w1"), keys.idem("msg:w2")
    assert lua.plan(delivery("r0", "m0", unit(e0, "m0.0", lane=lane))) == ["r"]
    waiting = delivery("r1", "m1", unit(e1, "m1.0", lane=lane))  # no after: behind m0.0, it waits
    behind = delivery("r2", "m2", unit(e2, "m2.0", lane=lane, after="m1.0"))
    assert lua.plan(waiting, behind) == ["q", "q"]


def test_finish_wait_enqueues_a_unit_whose_turn_came_before_its_message_was_stored(
    lua: Lua, keys: KeyLayout, client: redis.Redis
) -> None:
    """A unit planned "q" heads its lane by the time its delivery finishes (the unit ahead finished in
    between, with no message of it to hand over): its message goes on the queue at once."""
    lane = keys.lane("phone:user")
    e0, e1 = keys.idem("msg:t0"), keys.idem("msg:t1")
    assert lua.plan(
        delivery("r0", "m0", unit(e0, "m0.0", lane=lane)), delivery("r1", "m1", unit(e1, "m1.0", lane=lane))
    ) == [
        "r",
        "q",
    ]
    ahead = Ops()
    ahead.done(e0, CB)
    ahead.pop_lane(lane, "m0.0")
    assert lua.finish(ahead) == OK  # m1.0 heads the lane, but nothing of it is stored: nothing moves
    assert lua.queue() == [] and lua.lane(lane) == [b"m1.0"]
    assert stored(lua, (e1, "m1.0", lane, b"unit m1.0")) == OK
    assert lua.queue() == [b"m1.0"] and client.hget(keys.messages, "m1.0") == b"unit m1.0"
    assert not client.exists(keys.units)
    assert lua.plan(own("m1.0", "m1.0", key=e1, lane=lane)) == ["r"]
