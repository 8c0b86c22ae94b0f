"""The one callback loop (wa_middleware/events/run.py): its policy, shared by every runner."""

from __future__ import annotations

import pytest

from wa_middleware import Message, NoAuth, StopPropagation, Webhook, testing
from wa_middleware.events.run import Pair, pairs, run_all, run_callbacks


def webhook(log: list[str]) -> Webhook:
    wa = Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:1/0")

    @wa.on_message(name="first")
    def first(message: Message) -> None:
        log.append(f"first:{message.text.body if message.text else ''}")

    @wa.on_message("text", text="stop", name="stopper")
    def stopper(message: Message) -> None:
        log.append("stopper")
        raise StopPropagation

    @wa.on_message("text", text_prefix="boom", name="boom")
    def boom(message: Message) -> None:
        log.append("boom")
        raise ValueError("boom")

    @wa.on_message("text", name="last")
    async def last(message: Message) -> None:
        log.append("last")

    @wa.on_status(name="status")
    def status(status: object) -> None:
        log.append("status")

    return wa


def events(*deliveries: testing.Delivery) -> list:  # type: ignore[type-arg]
    return testing.delivery(*deliveries).events()


def test_events_in_order_callbacks_in_registration_order() -> None:
    log: list[str] = []
    wa = webhook(log)
    states = [o.state for o in run_callbacks(pairs(wa.registry, events(testing.text("a"), testing.text("b"))))]
    assert log == ["first:a", "last", "first:b", "last"]
    assert states == ["ok"] * 4


def test_stop_propagation_skips_the_later_callbacks_of_that_event_only() -> None:
    log: list[str] = []
    wa = webhook(log)
    outcomes = list(run_callbacks(pairs(wa.registry, events(testing.text("stop"), testing.text("go")))))
    assert [(o.item.callback.name, o.state) for o in outcomes] == [
        ("first", "ok"), ("stopper", "stopped"), ("last", "skipped"), ("first", "ok"), ("last", "ok"),
    ]  # fmt: skip
    assert all(o.succeeded for o in outcomes)


def test_a_failure_is_reported_and_the_rest_still_run() -> None:
    log: list[str] = []
    wa = webhook(log)
    report = run_all(pairs(wa.registry, events(testing.text("boom"), testing.text("x"))))
    assert log == ["first:boom", "boom", "last", "first:x", "last"]
    (failure,) = report.failures
    assert failure.item.callback.name == "boom" and isinstance(failure.error, ValueError)
    with pytest.raises(ValueError, match="boom"):
        report.raise_first()


def test_errors_raise_stops_at_the_first_failure() -> None:
    log: list[str] = []
    wa = webhook(log)
    with pytest.raises(ValueError):
        run_all(pairs(wa.registry, events(testing.text("boom"), testing.text("x"))), errors="raise")
    assert log == ["first:boom", "boom"]


def test_what_is_not_a_failure_propagates() -> None:
    wa = Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:1/0")

    @wa.on_message()
    def interrupted(message: Message) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(run_callbacks(pairs(wa.registry, events(testing.text()))))


def test_hold_is_asked_lazily_after_the_previous_outcome() -> None:
    log: list[str] = []
    wa = webhook(log)
    blocked: set[str] = set()
    seen = []
    items = pairs(wa.registry, events(testing.text("boom"), testing.text("x")))
    for outcome in run_callbacks(items, hold=lambda item: bool(blocked)):
        seen.append((outcome.item.callback.name, outcome.state))
        if outcome.state == "failed":
            blocked.add("lane")
    assert seen == [("first", "ok"), ("boom", "failed"), ("last", "held"), ("first", "held"), ("last", "held")]


def test_dry_run_runs_nothing() -> None:
    log: list[str] = []
    wa = webhook(log)
    report = run_all(pairs(wa.registry, events(testing.text("stop"), testing.status("read"))), dry_run=True)
    assert log == []
    assert [(o.item.callback.name, o.state) for o in report.outcomes] == [
        ("first", "dry"), ("stopper", "dry"), ("last", "dry"), ("status", "dry"),
    ]  # fmt: skip


def test_selection_by_kind_and_name() -> None:
    log: list[str] = []
    wa = webhook(log)
    evs = events(testing.text("a"), testing.status("read"))
    assert [p.callback.name for p in pairs(wa.registry, evs, kinds={"status"})] == ["status"]
    assert [p.callback.name for p in pairs(wa.registry, evs, names={"last", "status"})] == ["last", "status"]


def test_two_passes_over_one_event_do_not_share_their_stop() -> None:
    """No global state: a stop seen by one pass is invisible to another running at the same time."""
    log: list[str] = []
    wa = webhook(log)
    (event,) = events(testing.text("stop"))
    callbacks = wa.registry.matching(event)
    one = run_callbacks(Pair(event, cb) for cb in callbacks)
    other = run_callbacks(Pair(event, cb) for cb in callbacks if cb.name != "stopper")
    assert next(one).state == "ok" and next(one).state == "stopped"
    assert next(other).state == "ok" and next(other).state == "ok"  # "last" runs in the other pass
    assert next(one).state == "skipped"
