"""The worker's dispatcher in-process (a dramatiq Worker thread) against a real Redis."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import pytest

from wa_middleware import BasicAuth, Message, StopPropagation, Webhook, testing
from wa_middleware.worker.encoder import install


def drain(wa: Webhook, timeout: float = 20.0) -> None:
    install()
    worker = dramatiq.Worker(wa.broker, queues={wa.queue_name}, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        client = wa.broker.client
        deadline = time.monotonic() + timeout
        while client.hlen(f"{wa.namespace}:{wa.queue_name}.msgs") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.hlen(f"{wa.namespace}:{wa.queue_name}.msgs") == 0
    finally:
        worker.stop()


def _finish_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the FINISH calls from now on: the list gets, per call, how many messages it finished."""
    from wa_middleware.worker.finisher import Finisher

    calls: list[int] = []
    original = Finisher.finish

    def counted(self: Finisher, records: list[Any]) -> Any:
        calls.append(len(records))
        return original(self, records)

    monkeypatch.setattr(Finisher, "finish", counted)
    return calls


def test_stop_propagation_and_dedupe_in_the_worker(redis_url: str, namespace: str) -> None:
    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace)
    ran: list[str] = []

    @wa.on_message("text", text_prefix="stop")
    def stopper(message: Message) -> None:
        ran.append(f"stopper:{message.id}")
        raise StopPropagation

    @wa.on_message()
    def later(message: Message) -> None:
        ran.append(f"later:{message.id}")

    enqueuer = wa.sync_enqueuer()
    delivery = testing.text("stop here", id="wamid.S") + testing.text("go on", id="wamid.G")
    for _ in range(3):  # the same notification delivered three times
        job = wa.core.finish({}, delivery.to_bytes())
        enqueuer.enqueue(job.message_id, job.data)
    drain(wa)
    wa.close()
    assert sorted(ran) == ["later:wamid.G", "stopper:wamid.S"]
    assert wa.stats().get("duplicates", 0) >= 4


@pytest.fixture(autouse=True)
def _restore_encoder() -> object:
    previous = dramatiq.get_encoder()
    yield None
    dramatiq.set_encoder(previous)


def test_no_retry_goes_straight_to_the_dead_letters_with_a_full_log_line(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`NoRetry` (and any error with ``retryable = False``) skips the retries; the log line says which
    event, which try, the error's first line and the dead letter's id; a duplicate skip is logged."""
    from wa_middleware import NoRetry
    from wa_middleware.ops.deadletters import DeadLetters

    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, max_retries=3)
    tries: list[str] = []

    class Unauthorized(Exception):
        retryable = False

    @wa.on_message("text", text="permanent")
    def permanent(message: Message) -> None:
        tries.append("permanent")
        raise NoRetry("the API said 401\nmore detail")

    @wa.on_message("text", text="attribute")
    def attribute(message: Message) -> None:
        tries.append("attribute")
        raise Unauthorized("401 from the API")

    enqueuer = wa.sync_enqueuer()
    for delivery in (testing.text("permanent", id="wamid.NR1"), testing.text("attribute", id="wamid.NR2")):
        for _ in range(2):  # the second is a redelivery: skipped, and logged
            job = wa.core.finish({}, delivery.to_bytes())
            enqueuer.enqueue(job.message_id, job.data)
    with caplog.at_level("INFO", logger="wa_middleware.worker"):
        drain(wa)
    letters = DeadLetters(wa)
    try:
        found = letters.list()
    finally:
        letters.close()
    wa.close()
    assert sorted(tries) == ["attribute", "permanent"]  # one try each, no retries
    assert len(found) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    line = next(m for m in errors if "wamid.NR1" in m)
    assert "try 1 of 4" in line and "NoRetry: the API said 401" in line and "more detail" not in line
    assert "not retryable" in line and any(letter.id in line for letter in found)
    skips = [r.getMessage() for r in caplog.records if "already handled" in r.getMessage()]
    assert any("wamid.NR1" in m for m in skips) and any("wamid.NR2" in m for m in skips)


def test_a_reply_is_sent_once_when_its_callback_runs_again(redis_url: str, namespace: str) -> None:
    """``ctx.reply`` from a callback that replies, then fails twice: three runs, one message sent; the
    later runs get the recorded answer. A redelivery of the event sends nothing either."""
    from tests.messaging.standin import StandIn
    from wa_middleware import EventContext
    from wa_middleware.messaging import Dialog360

    standin = StandIn().start()
    try:
        wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, max_retries=3,
                     min_backoff=50, max_backoff=100, api_keys=Dialog360("key-1", base_url=standin.url))  # fmt: skip
        runs: list[str] = []

        @wa.on_message("text")
        def echo(message: Message, ctx: EventContext) -> None:
            sent = ctx.reply(f"echo: {message.text.body if message.text else ''}")
            runs.append(sent.message_id)
            if len(runs) < 3:
                raise RuntimeError("failing after the reply, on purpose")

        enqueuer = wa.sync_enqueuer()
        delivery = testing.text("hello", id="wamid.REPLY1", sender="4915100000077")
        job = wa.core.finish({}, delivery.to_bytes())
        enqueuer.enqueue(job.message_id, job.data)
        drain(wa)
        deadline = time.monotonic() + 20
        while len(runs) < 3 and time.monotonic() < deadline:
            drain(wa, timeout=5)
        job = wa.core.finish({}, delivery.to_bytes())  # the sender redelivers it
        enqueuer.enqueue(job.message_id, job.data)
        drain(wa)
        wa.close()
    finally:
        standin.stop()
    assert len(runs) == 3 and len(set(runs)) == 1  # three runs, one message id
    sends = standin.sends()
    assert len(sends) == 1
    assert sends[0].json["to"] == "4915100000077" and sends[0].json["text"]["body"] == "echo: hello"
    assert sends[0].headers.get("d360-api-key") == "key-1"


def test_the_once_per_event_window_inside_and_after(redis_url: str, namespace: str) -> None:
    """A unit done leaves a done-mark, no hash: a redelivery inside the window is skipped. A status's
    mark goes to the hour of its own time, a value-level error's (no time of its own) to the hour it
    ran in; each hour's sets expire ``dedupe_ttl`` after the hour, and once they are gone (expired
    here by hand: the window is days long) the events run again."""
    from wa_middleware import Error

    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, dedupe_ttl=3 * 86400)
    ran: list[str] = []

    @wa.on_status()
    def on_status(status: object) -> None:
        ran.append("status")

    @wa.on_error()
    def on_error(error: Error) -> None:
        ran.append("error")

    stamp = int(time.time()) - 2 * 3600  # a status two hours old
    status = testing.status("delivered", message_id="wamid.W1", timestamp=str(stamp)).to_bytes()
    error = testing.error(131000, "Something went wrong").to_bytes()
    enqueuer = wa.sync_enqueuer()

    def deliver(*bodies: bytes) -> None:
        for body in bodies:
            job = wa.core.finish({}, body)
            enqueuer.enqueue(job.message_id, job.data)
        drain(wa)

    client = wa.broker.client
    before = int(time.time()) // 3600
    deliver(status, error)
    after = int(time.time()) // 3600
    assert sorted(ran) == ["error", "status"]
    prefix = wa.keys.done_marks
    depth = prefix.count(":") + 1
    sets = {k.decode()[len(prefix) :]: k for k in client.scan_iter(f"{prefix}*") if k.count(b":") > depth}
    hour = stamp // 3600
    written = next(name for name in sets if name.startswith("w"))
    assert set(sets) == {f"{hour}:0:0", written} and int(written[1:].split(":")[0]) in (before, after)
    assert all(client.scard(key) == 1 for key in sets.values())
    assert client.execute_command("PEXPIRETIME", sets[f"{hour}:0:0"]) == ((hour + 1) * 3600 + 3 * 86400) * 1000
    assert not list(client.scan_iter(wa.keys.idem("*")))  # no hash left once done

    deliver(status, error)  # inside the window: both skipped
    assert sorted(ran) == ["error", "status"]

    for key in client.scan_iter(f"{prefix}*"):
        client.pexpire(key, 1)  # the window ends
    time.sleep(0.05)
    deliver(status, error)
    wa.close()
    assert sorted(ran) == ["error", "error", "status", "status"]


def test_lane_heads_behind_a_busy_one_run_in_order_and_finish_together(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One conversation, 60 deliveries queued before a worker starts: they queue up in the lane
    behind the first; each lane head handed over comes with the units behind it, run in order by
    the same thread and finished in one FINISH call: far fewer calls than deliveries."""
    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, ordered=True)
    ran: list[str] = []

    @wa.on_message()
    def on_text(message: Message) -> None:
        ran.append(str(message.id))

    calls = _finish_calls(monkeypatch)
    enqueuer = wa.sync_enqueuer()
    ids = [f"wamid.L{i:03d}" for i in range(60)]
    for mid in ids:
        job = wa.core.finish({}, testing.text("hi", id=mid, sender="4915100000001").to_bytes())
        enqueuer.enqueue(job.message_id, job.data)
    drain(wa)
    wa.close()
    assert ran == ids
    # One call per lane head and the units behind it (one each: 60 deliveries took 49 calls before).
    assert len(calls) < len(ids) // 3, calls


def test_batches_pack_conversations_and_keep_each_together() -> None:
    """Under load a fetch's deliveries go to batches of at most 16, several conversations in one
    batch; one conversation's deliveries are never split (in order, one thread), however many."""
    from types import SimpleNamespace

    from wa_middleware.worker.dispatch import BATCH, _groups

    def delivery(lane: str) -> tuple[Any, list[Any]]:
        return SimpleNamespace(actor_name="wa.dispatch"), [SimpleNamespace(lane=lane)]

    lanes = [f"lane:{i % 20}" for i in range(128)] + ["lane:big"] * 40 + [""] * 8  # + unordered ones
    fetched = [delivery(lane) for lane in lanes]
    groups = _groups([m for m, _ in fetched], [u for _, u in fetched], 8, "wa.dispatch")
    sizes: dict[str, int] = {}
    for group in groups:
        sizes[group] = sizes.get(group, 0) + 1
    by_lane: dict[str, set[str]] = {}
    for lane, group in zip(lanes, groups, strict=True):
        by_lane.setdefault(lane, set()).add(group)
    assert all(len(found) == 1 for lane, found in by_lane.items() if lane.startswith("lane:"))
    big = next(iter(by_lane["lane:big"]))
    assert sizes.pop(big) == 40  # one conversation's 40 deliveries: one batch
    assert "" not in sizes and max(sizes.values()) <= BATCH
    assert len(sizes) <= -(-len(lanes) // BATCH) + 3  # full batches, not one per conversation
    assert _groups([m for m, _ in fetched[:4]], [u for _, u in fetched[:4]], 8, "wa.dispatch") == [""] * 4
    # Fewer deliveries than work items: each alone, but a conversation's together still.
    two = [fetched[0], fetched[20], fetched[1]]  # lane:0, lane:0, lane:1
    assert _groups([m for m, _ in two], [u for _, u in two], 8, "wa.dispatch") == ["g0", "g0", ""]


def test_stale_statuses_are_skipped_through_the_worker(redis_url: str, namespace: str) -> None:
    """``skip_stale_statuses=True``: a "delivered" arriving after the "read" of the same message is
    skipped (counted as stale); another message's "delivered" runs; no key per message is left."""
    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, skip_stale_statuses=True)
    ran: list[str] = []

    @wa.on_status()
    def on_status(status: Any) -> None:
        ran.append(f"{status.id}:{status.status}")

    now = int(time.time())
    enqueuer = wa.sync_enqueuer()
    for status, mid, stamp in (
        ("read", "wamid.S1", now),
        ("delivered", "wamid.S1", now - 5),
        ("delivered", "wamid.S2", now),
    ):
        job = wa.core.finish({}, testing.status(status, message_id=mid, timestamp=str(stamp)).to_bytes())
        enqueuer.enqueue(job.message_id, job.data)
        drain(wa)
    client = wa.broker.client
    left = [k for k in client.scan_iter(f"{wa.namespace}:*") if b":st:" in k or b":idem:" in k]
    stats = wa.stats()
    wa.close()
    assert ran == ["wamid.S1:read", "wamid.S2:delivered"]
    assert stats.get("stale_statuses") == 1
    assert left == []


def test_a_batchs_deliveries_are_forgotten_once_finished(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 deliveries queued before the worker starts: fetched under load, they run in batches. Once
    finished, the process keeps nothing of them (the consumer acks only the batch message; its
    deliveries' ids piled up in the dispatcher, about 100 bytes each, before)."""
    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace)
    ran: list[str] = []

    @wa.on_message()
    def on_text(message: Message) -> None:
        ran.append(str(message.id))

    calls = _finish_calls(monkeypatch)
    enqueuer = wa.sync_enqueuer()
    for i in range(200):
        job = wa.core.finish({}, testing.text("hi", id=f"wamid.B{i:04d}").to_bytes())
        enqueuer.enqueue(job.message_id, job.data)
    drain(wa)
    left = set(wa.dispatcher.acked)
    wa.close()
    assert sorted(ran) == [f"wamid.B{i:04d}" for i in range(200)]
    assert max(calls) > 1  # batches did form
    assert left == set()


def _drain_threads(wa: Webhook, threads: int, timeout: float = 60.0) -> None:
    install()
    worker = dramatiq.Worker(wa.broker, queues={wa.queue_name}, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        client = wa.broker.client
        deadline = time.monotonic() + timeout
        while (client.hlen(f"{wa.namespace}:{wa.queue_name}.msgs") or client.zcard(wa.keys.retries)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert client.hlen(f"{wa.namespace}:{wa.queue_name}.msgs") == 0
    finally:
        worker.stop()


@pytest.mark.parametrize("fail", [pytest.param(False, id="all-succeed"), pytest.param(True, id="one-fails-once")])
def test_a_deep_queue_of_conversations_follows_the_work_items_running_them(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch, fail: bool
) -> None:
    """20 conversations of 60 messages queued before 8 worker threads start: later fetches find each
    conversation's lane held by a work item of this very process, and follow it (run after it, in its
    thread) instead of waiting stored in the lane: every conversation in order, each message once, and
    no unit stored to wait. A failure (retried once) holds its conversation: what follows it waits."""
    from wa_middleware.worker.dispatch import Dispatcher
    from wa_middleware.worker.finish import Ops

    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, ordered=True, min_backoff=50)
    ran: dict[str, list[str]] = {}
    failed: list[str] = []

    @wa.on_message()
    def on_text(message: Message) -> None:
        if fail and message.id == "wamid.c3.m010" and not failed:
            failed.append(str(message.id))
            raise RuntimeError("once")
        ran.setdefault(str(message.from_), []).append(str(message.id))

    waits: list[str] = []
    original = Ops.wait

    def counted(self: Ops, key: str, field: str, uid: str, lane: str, data: bytes) -> None:
        waits.append(uid)
        original(self, key, field, uid, lane, data)

    monkeypatch.setattr(Ops, "wait", counted)
    steps: list[str] = []
    plan = Dispatcher.plan

    def planned(self: Dispatcher, *args: Any, **kwargs: Any) -> list[str]:
        result = plan(self, *args, **kwargs)
        steps.extend(result)
        return result

    monkeypatch.setattr(Dispatcher, "plan", planned)
    enqueuer = wa.sync_enqueuer()
    expected: dict[str, list[str]] = {}
    for i in range(60):
        for c in range(20):
            sender, mid = f"49170000{c:04d}", f"wamid.c{c}.m{i:03d}"
            expected.setdefault(sender, []).append(mid)
            job = wa.core.finish({}, testing.text("hi", id=mid, sender=sender).to_bytes())
            enqueuer.enqueue(job.message_id, job.data)
    _drain_threads(wa, threads=8)
    dispatcher = wa.runtime.dispatcher
    wa.close()
    assert ran == expected
    assert failed == (["wamid.c3.m010"] if fail else [])
    if not fail:
        # Every unit was planned to run ("r") by the work item that took it or the one it followed:
        # none was left to wait in its lane ("q"), stored and handed over one by one.
        assert "".join(steps).count("r") == 1200 and "q" not in "".join(steps)
        assert waits == []
    else:
        assert waits  # what followed the failure waited behind it in its lane, stored
    assert dispatcher.attached == 0 and not dispatcher._holders and not dispatcher._tails


def test_an_ordered_callback_refused_by_a_fenced_lease_is_no_failure(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`Lease.ordered` refuses to start an ordered callback once this process was presumed dead (its
    unit runs elsewhere): the log says so, and nothing is scheduled for it here: no retry, no dead
    letter, no "callback failed" line."""
    from collections.abc import Iterator
    from contextlib import contextmanager

    from wa_middleware.worker.lease import Fenced

    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, ordered=True)
    ran: list[str] = []

    @wa.on_message()
    def on_text(message: Message) -> None:
        ran.append(str(message.id))

    @contextmanager
    def fenced(unit: Any) -> Iterator[None]:
        raise Fenced("presumed dead before an ordered callback started: it runs elsewhere, not here")
        yield

    wa.runtime.dispatcher.around = fenced
    job = wa.core.finish({}, testing.text("hi", id="wamid.F1", sender="4915100000009").to_bytes())
    wa.sync_enqueuer().enqueue(job.message_id, job.data)
    with caplog.at_level("INFO", logger="wa_middleware"):
        drain(wa)
    client = wa.broker.client
    retries, dead = client.zcard(wa.keys.retries), client.zcard(wa.keys.dead_letters)
    wa.close()
    assert ran == []
    assert (retries, dead) == (0, 0)
    lines = [r.getMessage() for r in caplog.records]
    assert any("on_text not run on message wamid.F1: presumed dead" in line for line in lines), lines
    assert not any("failed" in line for line in lines), lines


def test_deliveries_a_middleware_skips_are_acked_unrun_batches_too(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dramatiq middleware that skips messages (``SkipMessage``): each delivery is acked without
    running, as dramatiq does, those run in batches under load as well (a skipped batch left its
    deliveries taken by the process, for ever), and the process keeps nothing of them."""
    from dramatiq.middleware import Middleware, SkipMessage

    class SkipAll(Middleware):  # type: ignore[misc]
        def before_process_message(self, broker: Any, message: Any) -> None:
            raise SkipMessage()

    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace)
    ran: list[str] = []

    @wa.on_message()
    def on_text(message: Message) -> None:
        ran.append(str(message.id))

    wa.broker.add_middleware(SkipAll())
    calls = _finish_calls(monkeypatch)
    enqueuer = wa.sync_enqueuer()
    for i in range(120):
        job = wa.core.finish({}, testing.text("hi", id=f"wamid.K{i:04d}").to_bytes())
        enqueuer.enqueue(job.message_id, job.data)
    _drain_threads(wa, 4, timeout=20.0)
    client = wa.broker.client
    acks = [key for key in client.scan_iter(f"{wa.keys.acks_prefix}*") if client.scard(key)]
    dispatcher = wa.dispatcher
    left = (dict(dispatcher.batches), dict(dispatcher.plans), set(dispatcher.acked))
    wa.close()
    assert ran == []
    assert max(calls) > 1  # batches were skipped, their deliveries acked together
    assert acks == []
    assert left == ({}, {}, set())


def test_ordered_deliveries_a_middleware_skips_leave_their_lanes(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skipped deliveries whose ordered units wait behind a unit that runs elsewhere: their units leave
    the lanes (with "pop", which moves a lane on only from its head, they stayed, and the conversation
    stopped at them for ever once its turn came: nothing stored to run)."""
    from dramatiq.middleware import Middleware, SkipMessage

    from wa_middleware.events.decode import decode_delivery
    from wa_middleware.events.identity import conversation_key

    class SkipAll(Middleware):  # type: ignore[misc]
        def before_process_message(self, broker: Any, message: Any) -> None:
            raise SkipMessage()

    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, ordered=True)
    ran: list[str] = []

    @wa.on_message()
    def on_text(message: Message) -> None:
        ran.append(str(message.id))

    wa.broker.add_middleware(SkipAll())
    client = wa.broker.client
    bodies = [testing.text("hi", id=f"wamid.L{i:03d}", sender=f"4915100000{i % 3}").to_bytes() for i in range(45)]
    lanes = sorted({wa.keys.lane(str(conversation_key(decode_delivery(b)[0]))) for b in bodies})
    assert len(lanes) == 3
    for lane in lanes:  # each conversation's head: a unit that runs on another worker
        client.rpush(lane, "elsewhere.0")
    enqueuer = wa.sync_enqueuer()
    for body in bodies:
        job = wa.core.finish({}, body)
        enqueuer.enqueue(job.message_id, job.data)
    _drain_threads(wa, 4, timeout=20.0)
    left = {lane: client.lrange(lane, 0, -1) for lane in lanes}
    stored = client.hlen(wa.keys.units)
    wa.close()
    assert ran == []
    assert left == {lane: [b"elsewhere.0"] for lane in lanes}
    assert stored == 0
