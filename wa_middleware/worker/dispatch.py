"""The worker side: run a delivery's callbacks once per event, each (event, callback) on its own.

A delivery message is planned when it is taken off the queue (`consumer.py`): one script claims
every (event, callback) unit of the whole fetched batch and puts ordered units in their
conversation lanes. The worker thread then runs the units it was given inline, in event order,
and one more script per delivery records the outcome, hands failures over to messages of their
own (retried with exponential backoff, then dead-lettered), moves lanes on and acks the delivery.

Under load a conversation's deliveries keep coming while a work item of this process still runs
its earlier ones: those are claimed right behind them and follow that work item (`_Holder`), which
runs them after its own in the same thread, rather than being stored in the lane and handed over
one by one when it moves on.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import redis

from .. import metrics
from ..events.callbacks import Callback, Registry
from ..events.decode import Event, decode_delivery
from ..events.identity import conversation_key, event_key
from ..events.models import Change, Error, EventContext, Message, Status
from ..events.run import run_callbacks
from ..keys import KeyLayout
from ..settings import WorkerSettings
from .finish import PLAN_MESSAGE, Ops, plan_message, plan_own, plan_unit
from .finisher import Finisher
from .lease import Fenced, Lease
from .marks import NO_MARK, Mark, mark_of, progress_arg
from .scripts import plan_keys

if TYPE_CHECKING:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

__all__ = ["ATTACHED_LIMIT", "Dispatcher", "Unit"]

logger = logging.getLogger("wa_middleware.worker")

_EVENT_TYPES: dict[str, type[Any]] = {"message": Message, "status": Status, "error": Error, "change": Change}
_encode = msgspec.msgpack.Encoder().encode

#: The statuses that follow one another; others (failed, deleted...) are never skipped as stale.
STATUS_RANKS = {"sent": 1, "delivered": 2, "read": 3, "played": 4}
_TOP_RANK = max(STATUS_RANKS.values())


@dataclass(slots=True)
class Unit:
    """One (event, callback) pair: the unit of work, of deduplication and of retries."""

    uid: str
    event: Event
    callback: Callback
    key: str
    lane: str
    #: What remembers it once done (`marks.py`).
    mark: Mark = NO_MARK


class Dispatcher:
    """Runs deliveries and units for one webhook against its Redis broker.

    :param registry: the callbacks.
    :param settings: how callbacks run (ordering default, retries, once-per-event window...).
    :param keys: the Redis key names.
    """

    def __init__(self, *, registry: Registry, settings: WorkerSettings, keys: KeyLayout) -> None:
        self.registry = registry
        self.settings = settings
        self.keys = keys
        self.skip_stale_statuses = settings.skip_stale_statuses
        self.queue_name = settings.queue_name
        self.dispatch_actor = settings.dispatch_actor
        self.unit_actor = settings.callback_actor
        self.ordered = settings.ordered
        self.ttl_ms = str(int(settings.dedupe_ttl * 1000))
        self.stats_key = keys.stats
        self.max_retries = settings.max_retries
        self.min_backoff = settings.min_backoff
        self.max_backoff = settings.max_backoff
        #: Plans made when messages were fetched: redis message id -> (plan, units).
        self.plans: dict[str, tuple[str, list[Unit] | None]] = {}
        #: Messages this process acked inside a finish script: the consumer skips its own ack.
        self.acked: set[str] = set()
        #: Entered around each callback call: the facade sets the run's replies (``ctx.reply``) here.
        self.around: Callable[[Unit], AbstractContextManager[Any]] | None = None
        #: The batch group PLAN gave each taken delivery, for the consumer to build the batches.
        self.groups: dict[str, str] = {}
        #: Deliveries grouped by the consumer into one batch message: batch id -> its messages.
        self.batches: dict[str, list[dramatiq.Message[Any]]] = {}
        self.batch_actor = f"{settings.name}.batch"
        #: Guards the follow-ups: `_tails`, `_holders`, the holders' pending lists and states, `attached`.
        self._follow = threading.Lock()
        #: lane -> (the last unit this process claimed to run in it, the work item that runs it).
        self._tails: dict[str, tuple[str, _Holder]] = {}
        #: The holder of each taken delivery that starts or is in a work item running ordered units.
        self._holders: dict[str, _Holder] = {}
        #: Deliveries attached to holders, not run yet (the consumer fetches less while there are many).
        self.attached = 0
        #: Whether the last fetch (``plan`` with ``pop``, the consumer's thread alone) ended before its
        #: first delivery, on its own limits: no other worker took the head, so looking again at once
        #: would only end there again.
        self.cut = False
        self._broker: RedisBroker | None = None
        self._lease: Lease | None = None
        #: What counts as a callback failing: also dramatiq's time limit, so a callback that runs
        #: too long is retried alone instead of failing (and re-running) its whole delivery.
        self._failures: tuple[type[BaseException], ...] = (Exception,)

    def bind(self, broker: RedisBroker) -> None:
        from dramatiq.middleware.time_limit import TimeLimitExceeded

        self._failures = (Exception, TimeLimitExceeded)
        self._broker = broker
        self._lease = Lease(broker, self.keys, self.settings.recovery_timeout, int(broker.dead_message_ttl))
        self.finisher = Finisher(self._lease, self.keys, self.ttl_ms)

    @property
    def broker(self) -> RedisBroker:
        if self._broker is None:
            raise RuntimeError("the dispatcher is not bound to a broker")
        return self._broker

    @property
    def lease(self) -> Lease:
        if self._lease is None:
            raise RuntimeError("the dispatcher is not bound to a broker")
        return self._lease

    # -- planning --------------------------------------------------------------------------

    def units(self, events: list[Event], message_id: str) -> list[Unit]:
        """The units of a delivery in the order they run: events in order, callbacks in registration order."""
        units = _Units()
        # Counted when the delivery runs, not here: a peeked batch may be planned by several workers.
        units.kinds = [event.kind for event in events]
        now, ttl = time.time(), self.settings.dedupe_ttl
        for event in events:
            key: str | None = None
            for callback in self.registry.matching(event):
                if key is None:
                    key = self.keys.idem(event_key(event))
                lane = ""
                if callback.ordered if callback.ordered is not None else self.ordered:
                    conversation = conversation_key(event)
                    if conversation is not None:
                        lane = self.keys.lane(conversation)
                mark = mark_of(event, key, callback.name, now=now, ttl=ttl)
                units.append(Unit(f"{message_id}.{len(units)}", event, callback, key, lane, mark))
        return units

    def plan_args(
        self, message: dramatiq.Message[Any], out: list[Any], follow: _Follow | None = None
    ) -> list[Unit] | None:
        """Append the PLAN arguments of one fetched message to ``out``; return its units if a delivery.

        :param follow: the lanes' tails as this fetch goes (`plan`): a delivery whose ordered units are
            all behind one work item of this process is planned to follow it.
        """
        mark = len(out)
        try:
            return self._plan_args(message, out, follow)
        except Exception:
            del out[mark:]
            # A message that cannot be planned must not block the head of the queue: take it
            # unplanned; its actor fails on it the same way and dramatiq dead-letters it.
            logger.exception("wa-middleware: cannot plan message %s", message.message_id)
            out += plan_message(rid=rid_of(message), mid=str(message.message_id), count=-1, group="")
            out += plan_own(key="", field="", lane="")
            return None

    def _plan_args(self, message: dramatiq.Message[Any], out: list[Any], follow: _Follow | None) -> list[Unit] | None:
        rid = rid_of(message)
        _text(message.message_id)  # as the scripts' arguments travel (`finish.pack`), not bytes
        if message.actor_name == self.dispatch_actor:
            body, received_at, delivery_id = _dispatch_args(message)
            units = self.units(
                decode_delivery(body, delivery_id=delivery_id, received_at=received_at), message.message_id
            )
            out += plan_message(rid=rid, mid=message.message_id, count=len(units), group="")
            afters = follow.afters(rid, units) if follow is not None else None
            for index, unit in enumerate(units):
                hour, shard, digest = unit.mark
                out += plan_unit(
                    key=unit.key, field=unit.callback.name, lane=unit.lane, uid=unit.uid,
                    stale=self._stale_arg(unit), hour=hour, shard=shard, digest=digest,
                    after=afters[index] if afters is not None else "",
                )  # fmt: skip
            return units
        out += plan_message(rid=rid, mid=message.message_id, count=-1, group="")
        if message.actor_name == self.unit_actor:
            name, _, _, _, key, lane = _unit_args(message)
            out += plan_own(key=_text(key), field=_text(name), lane=_text(lane))
        else:  # not ours: just taken off the queue
            out += plan_own(key="", field="", lane="")
        return None

    def _stale_arg(self, unit: Unit) -> str:
        data = unit.event.data
        if not self.skip_stale_statuses or not isinstance(data, Status) or not data.id:
            return ""
        rank = STATUS_RANKS.get(data.status or "")
        if rank is None:
            return ""
        return progress_arg(data.id, rank, _TOP_RANK, unit.mark[0], now=time.time())

    def followable(self) -> bool:
        """Whether work items of this process run ordered units that later deliveries may follow."""
        return bool(self._tails) and self.attached < ATTACHED_LIMIT

    def plan(
        self, messages: Sequence[dramatiq.Message[Any]], *, pop: bool, slots: int = 0, others: int | None = None
    ) -> list[str]:
        """Claim the units of ``messages``; with ``pop``, also take them off the queue head.

        What a fetch takes is held (`Lease.hold`) before the script is sent: if its reply is lost,
        the messages are in this process's acks without its knowing, and reconciling requeues them.

        :param slots: the work items the fetch may fill: with more deliveries than that, they are
            grouped into batches (`groups`), a conversation's deliveries in one batch where they fit.
        :param others: with ``pop``, how many deliveries that follow no work item of this process it
            takes at most (None: all): the fetch ends before the next one.
        """
        lease = self.lease
        bid = lease.broker_id
        k = self.keys
        keys = plan_keys(k, bid)
        args: list[Any] = [bid, self.ttl_ms, "1" if pop else "0", "1" if lease.fresh else "0", lease.epoch or ""]
        marks: list[int] = []
        units: list[list[Unit] | None] = []
        follow: _Follow | None = None
        if pop and self._tails:  # some work item of this process runs ordered units: they may be followed
            with self._follow:
                follow = _Follow(dict(self._tails), self.attached)
        for index, message in enumerate(messages):
            mark = len(args)
            planned = self.plan_args(message, args, follow)
            if others is not None and not (follow is not None and rid_of(message) in follow.attach):
                others -= 1
            # The fetch ends before a delivery that could not follow its work item for lack of room
            # (left to wait in its lane, it would make every later one there wait too), and before one
            # too many that follows none.
            if (follow is not None and follow.full) or (others is not None and others < 0):
                del args[mark:]
                messages = messages[:index]
                break
            marks.append(mark)
            units.append(planned)
        if pop:
            self.cut = not messages
        if not messages:
            return []
        attach = follow.attach if follow is not None else {}
        # Deliveries that follow a work item are in no batch of their own.
        grouped = (
            [None if rid_of(m) in attach else u for m, u in zip(messages, units, strict=True)] if attach else units
        )
        groups = _groups(messages, grouped, slots, self.dispatch_actor)
        offset = PLAN_MESSAGE.index("group")
        for mark, group in zip(marks, groups, strict=True):
            args[mark + offset] = group
        rids = [rid_of(message) for message in messages]
        if pop:
            lease.hold(rids, bid)
        sent = time.monotonic()
        try:
            raw = lease.scripts.plan(keys=keys, args=args)
        except redis.ResponseError as exc:
            lease.release(rids)
            if str(exc).startswith("WAFENCED"):
                lease.fence(bid)
                return []
            if str(exc).startswith("WALOST"):
                lease.lost()
                return []
            raise
        except BaseException:
            lease.release(rids)
            raise
        result = [r.decode() if isinstance(r, bytes) else r for r in raw]
        if pop:
            lease.extend(sent)
            lease.release(rids[len(result) :])  # not taken: another worker had them first
        for rid, plan, message_units, group in zip(rids, result, units, groups, strict=False):  # fewer taken
            self.plans[rid] = (plan, message_units)
            if group:
                self.groups[rid] = group
        if pop and any(unit.lane for message_units in units if message_units for unit in message_units):
            self._hold_lanes(messages[: len(result)], result, units, groups, attach)
        return result

    def _hold_lanes(
        self,
        messages: Sequence[dramatiq.Message[Any]],
        plans: list[str],
        units: list[list[Unit] | None],
        groups: list[str],
        attach: dict[str, _Holder],
    ) -> None:
        """After PLAN: attach the deliveries planned to follow a work item to it, give the other work
        items running ordered units a holder, and note the lanes' new tails.

        A delivery planned to follow a holder that has finished since (its lanes moved on) runs as a
        work item of its own, with the later ones of this fetch following it; one planned to follow a
        holder that stopped unfinished goes back to the queue: its units are behind units that will
        run elsewhere, and planned again there they wait in their lanes.
        """
        back: list[str] = []
        with self._follow:
            new: dict[str, _Holder] = {}
            instead: dict[int, _Holder] = {}
            for message, plan, message_units, group in zip(messages, plans, units, groups, strict=False):
                rid = rid_of(message)
                if message_units is None or not any(unit.lane for unit in message_units):
                    continue
                target = attach.get(rid)
                holder: _Holder | None
                if target is None:
                    holder = new.get(group or rid)
                    if holder is None:
                        holder = new[group or rid] = _Holder()
                    self._holders[rid] = holder
                elif target.state == _OPEN:
                    holder = target
                elif target.state == _DONE:
                    holder = instead.get(id(target))
                    if holder is None:  # the first of them starts a work item of its own (in no batch)
                        holder = instead[id(target)] = _Holder(target.blocked)
                        self._holders[rid] = holder
                        self._note_tails(holder, message_units, plan)
                        continue
                else:
                    back.append(rid)
                    self.groups[rid] = _ATTACHED
                    self.plans.pop(rid, None)
                    continue
                if target is not None:
                    holder.pending.append(message)
                    holder.taken += 1
                    self.attached += 1
                    self.groups[rid] = _ATTACHED
                self._note_tails(holder, message_units, plan)
        if back:
            self.lease.requeue(back)

    def _note_tails(self, holder: _Holder, units: list[Unit], plan: str) -> None:
        for unit, step in zip(units, plan, strict=True):
            if not unit.lane:
                continue
            if step == "r":
                self._tails[unit.lane] = (unit.uid, holder)
                holder.lanes.add(unit.lane)
            elif step == "q":  # the lane's tail now waits for a unit that runs elsewhere
                self._tails.pop(unit.lane, None)

    def _take_plan(self, message: dramatiq.Message[Any]) -> tuple[str, list[Unit] | None]:
        rid = rid_of(message)
        found = self.plans.pop(rid, None)
        if found is None:  # not fetched by our consumer (e.g. a custom worker): plan it now
            self.lease.call("plan a message", lambda: self.plan([message], pop=False))
            found = self.plans.pop(rid)
        return found

    def _may_run(self, message: dramatiq.Message[Any]) -> bool:
        """Whether this process may still run ``message``: not dropped when fenced, lease held."""
        rid = rid_of(message)
        lease = self.lease
        if rid in lease.dropped:
            lease.dropped.discard(rid)
            self.plans.pop(rid, None)
            self.acked.add(rid)
            logger.warning("wa-middleware: message %s not run: it runs on another worker", message.message_id)
            return False
        try:
            lease.ensure()
        except Fenced:
            if lease.halted:  # stopping for good: leave it where it is (in Redis, for the next workers)
                self.acked.add(rid)
                return False
            return self._may_run(message)  # what it held under the old id is dropped now
        return True

    # -- running ---------------------------------------------------------------------------

    def run_delivery(self, message: dramatiq.Message[Any]) -> None:
        _chain.budget = CHAIN_BUDGET
        with self._follow:
            holder = self._holders.pop(rid_of(message), None)
        if holder is not None:  # it runs ordered units: what follows it by its end finishes with it
            done = False
            try:
                done = self._run_messages([message], holder.blocked, holder, item=rid_of(message))
            finally:
                self._follow_up(holder, done)
            return
        if not self._may_run(message):
            return
        plan, units = self._take_plan(message)
        if units is None:
            # Planning failed when the message was taken (it then claimed nothing): never run it
            # against that empty plan. Failing sends it to the dead letters (a replay plans it afresh).
            raise RuntimeError(f"delivery {message.message_id} could not be planned")
        self.finish(message, self._run_planned(plan, units))

    def run_batch(self, batch: dramatiq.Message[Any]) -> None:
        """Run the deliveries the consumer grouped into ``batch`` (under load), one after the other in
        this thread, and finish them all in one FINISH call: one round trip and one fsync for many."""
        _chain.budget = CHAIN_BUDGET
        messages = self.batches.pop(rid_of(batch), [])
        self.acked.add(rid_of(batch))
        with self._follow:
            holders = [self._holders.pop(rid_of(m), None) for m in messages]
        holder = next((h for h in holders if h is not None), None)
        done = False
        try:
            done = self._run_messages(messages, holder.blocked if holder is not None else set(), holder)
        finally:
            if holder is not None:
                self._follow_up(holder, done)

    def _follow_up(self, holder: _Holder, done: bool) -> None:
        """Run the deliveries attached to ``holder`` while its work item ran, a batch at a time, until
        none is left; then close it: later deliveries of its lanes no longer follow it.

        :param done: its own work finished and recorded (FINISH applied): the lanes moved on past it.
            If not (a crash of the thread, a fenced lease, Redis out of reach while stopping), what
            follows it is not run here but goes back to the queue, to wait in its lanes once planned again.
        """
        left: list[str] = []
        try:
            while True:
                with self._follow:
                    if not (done and holder.pending and not self.lease.halted):
                        left = self._close(holder, _DONE if done else _STOPPED)
                        break
                done = self._run_messages([], holder.blocked, holder)  # takes what follows it
        except BaseException:
            with self._follow:
                left = self._close(holder, _STOPPED)
            raise
        finally:
            if left and not self.lease.halted:  # halted: they stay taken, for the next workers' recovery
                self.lease.requeue(left)

    def abandon(self, rids: list[str]) -> list[str]:
        """Work items that will not run here (requeued, rejected, skipped): the redis ids of the
        deliveries that followed them, to go back to the queue with them."""
        out: list[str] = []
        with self._follow:
            for rid in rids:
                holder = self._holders.pop(rid, None)
                if holder is not None and holder.state == _OPEN:
                    out += self._close(holder, _STOPPED)
        return out

    def _close(self, holder: _Holder, state: str) -> list[str]:
        """Close ``holder`` (under `_follow`): later deliveries of its lanes no longer follow it. The
        redis ids of those that followed it and did not run, forgotten here."""
        left, holder.pending = [rid_of(m) for m in holder.pending], []
        self.attached -= len(left)
        holder.state = state
        for lane in holder.lanes:
            if self._tails.get(lane, (None, None))[1] is holder:
                del self._tails[lane]
        for rid in left:
            self.plans.pop(rid, None)
        return left

    def _run_messages(
        self, messages: list[dramatiq.Message[Any]], blocked: set[str], holder: _Holder | None = None, item: str = ""
    ) -> bool:
        """Run deliveries one after the other in this thread, finishing them `BATCH` at a time (one
        FINISH call each: what a killed worker runs again is at most that many per thread); whether
        every one ran and its outcome was recorded (what follows them may run then).

        :param blocked: lanes held by a failed unit of an earlier delivery (of this work item).
        :param holder: the work item's holder: the deliveries following it that are there by the end
            run too, before the last FINISH call (behind the others in their lanes, they run after them
            in this thread, and the call moves the lanes past both in order).
        :param item: the redis id of the work item when it is one of ``messages`` (a delivery run on its
            own): it stays in `acked`, so that the consumer does not ack it again.
        """
        messages = list(messages)
        finished: list[tuple[dramatiq.Message[Any], Ops]] = []
        every = recorded = True
        index = 0
        try:
            while recorded:
                while index < len(messages) and recorded:
                    message = messages[index]
                    index += 1
                    if not self._may_run(message):
                        every = False
                        continue
                    plan, units = self._take_plan(message)
                    if units is None:
                        logger.error(
                            "wa-middleware: delivery %s could not be planned: dead-lettered", message.message_id
                        )
                        finished.append((message, self._bury_ops(message)))
                    else:
                        try:
                            finished.append((message, self._run_planned(plan, units, blocked)))
                        except BaseException:
                            # Past the callbacks' error handling (a BaseException): this delivery to the
                            # dead letters, the ones not started back to the queue, what ran recorded below.
                            finished.append((message, self._bury_ops(message)))
                            self.lease.requeue([rid_of(m) for m in messages[index:]])
                            raise
                    if len(finished) >= BATCH:
                        recorded = self.finish_all(finished) is not None
                        finished = []
                if holder is None or not every or not recorded:
                    break
                with self._follow:
                    more = holder.pending[: BATCH - len(finished)]
                    del holder.pending[: len(more)]
                    self.attached -= len(more)
                if not more:
                    break
                messages += more
        finally:
            if finished:
                recorded = self.finish_all(finished) is not None and recorded
            # The consumer acks the batch message, never its members: nothing else would take their
            # ids out of `acked` (they piled up there, about 100 bytes a delivery, before).
            self.acked.difference_update([rid for rid in map(rid_of, messages) if rid != item])
        # Not run after a FINISH that was not applied (Redis out of reach while stopping): they stay
        # taken, and run again elsewhere once this worker's heartbeat lapses, in their lanes' order.
        return every and recorded and index == len(messages)

    def _run_planned(self, plan: str, units: list[Unit], blocked: set[str] | None = None) -> Ops:
        """Run the units a delivery's plan gave this message; the FINISH operations of their outcomes.

        :param blocked: lanes in which an earlier unit failed (shared by the deliveries of a batch):
            later units of those lanes wait behind it.
        """
        metrics.events_decoded(getattr(units, "kinds", ()))
        skipped = plan.count("s")
        if skipped:
            metrics.duplicate_skipped(skipped)
            for unit, step in zip(units, plan, strict=True):
                if step == "s":
                    logger.info(
                        "callback %s skipped on %s %s: already handled (a redelivery), event key %s",
                        unit.callback.name, unit.event.kind, _event_id(unit), unit.key.rsplit(":idem:", 1)[-1],
                    )  # fmt: skip
        ops = Ops()
        if blocked is None:
            blocked = set()
        planned = [unit for unit, step in zip(units, plan, strict=True) if step == "r"]
        held = (lambda unit: unit.lane in blocked) if any(unit.lane for unit in planned) else None
        if "q" in plan:  # units waiting in their lanes behind units that run elsewhere
            for unit, step in zip(units, plan, strict=True):
                if step == "q":
                    self._wait(unit, ops)
        for outcome in run_callbacks(planned, failures=self._failures, hold=held, around=self._around()):
            unit = outcome.item
            if outcome.state == "held":
                self._wait(unit, ops)
                continue
            if outcome.state == "failed":
                assert outcome.error is not None
                if isinstance(outcome.error, Fenced):  # it did not run, and runs elsewhere
                    self._not_run(unit, outcome.error)
                    if unit.lane:
                        blocked.add(unit.lane)
                    continue
                metrics.callback_run(unit.callback.name, ok=False)
                if self._failed(unit, 0, outcome.error, ops) and unit.lane:
                    blocked.add(unit.lane)
                continue
            if outcome.state != "skipped":
                metrics.callback_run(unit.callback.name, ok=True)
            ops.done(unit.key, unit.callback.name, unit.mark)
            if unit.lane:
                ops.pop_lane(unit.lane, unit.uid)
        return ops

    def _wait(self, unit: Unit, ops: Ops) -> None:
        """The FINISH operation that stores ``unit``'s own message to wait in its lane for its turn."""
        ops.wait(unit.key, unit.callback.name, unit.uid, unit.lane, self._unit_message(unit, 0, rid=unit.uid).encode())

    def run_unit(self, message: dramatiq.Message[Any]) -> None:
        _chain.budget = CHAIN_BUDGET
        if not self._may_run(message):
            return
        plan, _ = self._take_plan(message)
        if plan != "r":
            logger.info("unit %s skipped: already run, dead-lettered or out of turn", message.message_id)
            self.finish(message, Ops())  # just acked
            return
        self._run_unit(message)

    def _run_unit(self, message: dramatiq.Message[Any], chained: bool = False) -> None:
        ops, _ = self._unit_ops(message)
        self.finish(message, ops, chained=chained)

    def _unit_ops(self, message: dramatiq.Message[Any]) -> tuple[Ops, bool]:
        """Run a unit's own message; the FINISH operations of its outcome, and whether its lane
        moves on (False while a failed ordered unit holds it for its retry)."""
        name, kind, data, ctx, key, lane = _unit_args(message)
        callback = self.registry.by_name.get(name)
        if callback is None:
            # Removed or renamed since the unit was stored: retrying cannot help, and an ordered unit
            # must not hold its conversation. Dead-letter it at once (a replay runs it once it exists again).
            logger.error("no callback named %r is registered in this worker: dead-lettered", name)
            rid = str(uuid.uuid4())
            error = f"LookupError: no callback named {name!r} is registered in the worker"
            dead = message.copy(options={"redis_message_id": rid, "wa_error": error})
            ops = Ops()
            ops.dead(key, name, message.message_id, rid, dead.encode())
            if lane:
                ops.pop_lane(lane, message.message_id)
            return ops, True
        event = Event(
            kind,  # type: ignore[arg-type]
            msgspec.msgpack.decode(data, type=_EVENT_TYPES[kind]),
            msgspec.msgpack.decode(ctx, type=EventContext),
        )
        mark = mark_of(event, key, name, now=time.time(), ttl=self.settings.dedupe_ttl)
        unit = Unit(message.message_id, event, callback, key, lane, mark)
        attempt = int(message.options.get("wa_attempt", 0))
        ops = Ops()
        moved = True
        for outcome in run_callbacks([unit], failures=self._failures, around=self._around()):
            if outcome.state == "failed":
                assert outcome.error is not None
                if isinstance(outcome.error, Fenced):  # it did not run, and runs elsewhere
                    self._not_run(unit, outcome.error)
                    moved = False
                    continue
                metrics.callback_run(name, ok=False)
                moved = not self._failed(unit, attempt, outcome.error, ops)
            else:
                metrics.callback_run(name, ok=True)
                ops.done(key, name, mark)
                if lane:
                    ops.pop_lane(lane, unit.uid)
        return ops, moved

    def _around(self) -> Callable[[Unit], AbstractContextManager[Any]] | None:
        """What is entered around each callback: the facade's `around`, and in a process with a watchdog
        the lease's guard of an ordered unit (`Lease.ordered`: it never overlaps its rerun elsewhere)."""
        return self.around if self.lease.watchdog is None else self._guarded

    def _guarded(self, unit: Unit) -> AbstractContextManager[Any]:
        if self.around is None:
            return self.lease.ordered() if unit.lane else nullcontext()
        return self._ordered(unit, self.around) if unit.lane else self.around(unit)

    @contextmanager
    def _ordered(self, unit: Unit, around: Callable[[Unit], AbstractContextManager[Any]]) -> Iterator[None]:
        with self.lease.ordered(), around(unit):
            yield

    def finish(self, message: dramatiq.Message[Any], ops: Ops, *, chained: bool = False) -> None:
        """Record ``ops`` and ack ``message`` (FINISH), then run the lane heads it handed to this thread.

        Retried until Redis answers (FINISH is idempotent): a message is never acked without its
        outcome recorded, and no failure here reaches dramatiq (whose own retry or dead-lettering
        would run the whole delivery again, or bury callbacks that ran fine).
        """
        self.finish_all([(message, ops)], chained=chained)

    def finish_all(
        self, finished: list[tuple[dramatiq.Message[Any], Ops]], *, chained: bool = False, run: bool = False
    ) -> list[Any] | None:
        """FINISH several messages in one script call (each fenced on its own), then run the lane
        heads handed over to this thread. None if not every record was applied (Redis out of reach
        while stopping, or a message handed to another worker): what follows them must not run here.

        :param run: ``finished`` is a run of one lane's consecutive units (`_run_chain`): each record
            takes the next unit over as its lane's head (the next record finishes it in the same call)
            and only the last one's hand-over is new work. The lane heads are then returned, not run.
        """
        if not finished:
            return []
        lease = self.lease
        budget = getattr(_chain, "budget", None)
        take = AHEAD if budget is not None and budget > 0 else 0
        records = [(rid_of(message), lease.owner(rid_of(message)), take, ops) for message, ops in finished]
        if run:
            records = [(rid, bid, 1, ops) for rid, bid, _, ops in records[:-1]] + records[-1:]
        found = self.finisher.finish(records)
        results: list[list[Any] | None] = list(found) if found is not None else [None] * len(records)
        heads: list[Any] = []
        applied = True
        for index, ((rid, bid, _, _), result) in enumerate(zip(records, results, strict=True)):
            if not chained:
                self.acked.add(rid)  # the consumer that fetched it must not ack it again
            if result is None:
                # Stopping with Redis out of reach: the message stays in this process's acks, and runs
                # again elsewhere once its heartbeat lapses (at least once).
                applied = False
                continue
            lease.release([rid])
            if result[0] == "gone":
                applied = False
                logger.warning(
                    "wa-middleware: message %s was handed to another worker while this one was presumed dead: "
                    "its outcome here is not recorded (the other run's is)",
                    rid,
                )
                continue
            taken = result[1:]
            if taken and not (run and index < len(records) - 1):
                lease.hold([head.decode() for head in taken[::3]], bid)
                heads += taken
        if run:
            return heads
        if heads:
            self._run_chain(heads)
        return [] if applied else None

    def _bury_ops(self, message: dramatiq.Message[Any]) -> Ops:
        ops = Ops()
        ops.bury(rid_of(message))
        return self.release_ops(message, ops)

    def release_ops(self, message: dramatiq.Message[Any], ops: Ops | None = None) -> Ops:
        """The FINISH operations that take ``message``'s ordered units out of their lanes: it will not
        run them (rejected, or skipped by a middleware), and its conversations must move on."""
        ops = Ops() if ops is None else ops
        for lane, uid in self._lanes_of(message):
            ops.drop_lane(lane, uid)
        return ops

    def skip(self, message: dramatiq.Message[Any]) -> None:
        """A middleware skipped ``message``: acked unrun, as dramatiq does with a skipped message (a
        batch stands for its deliveries: each is acked), its ordered units out of their lanes (else
        their conversations would stop at them for ever); what followed it goes back to the queue."""
        rid = rid_of(message)
        members = self.batches.pop(rid, []) if rid.startswith("batch:") else [message]
        rids = [rid_of(m) for m in members]
        self.lease.requeue(self.abandon(rids))
        finished = [(m, self.release_ops(m)) for m in members]
        for member in rids:
            self.plans.pop(member, None)
        if finished:
            self.finish_all(finished)
        # This is their ack: nothing else would take them out of `acked`, where FINISH put them.
        self.acked.difference_update(rids)

    def nack(self, message: dramatiq.Message[Any]) -> None:
        """dramatiq rejected ``message`` (its actor raised past our error handling, or is unknown): move it
        to the dead letters and release the conversation lanes its units hold, in one FINISH."""
        rid = rid_of(message)
        if rid in self.batches:  # a batch rejected before it ran: its deliveries go back, unrun
            self.acked.add(rid)
            members = [rid_of(m) for m in self.batches.pop(rid)]
            self.lease.requeue(members + self.abandon(members))
            return
        self.lease.requeue(self.abandon([rid]))
        ops = self._bury_ops(message)
        self.plans.pop(rid, None)
        self.finish(message, ops)

    def _lanes_of(self, message: dramatiq.Message[Any]) -> list[tuple[str, str]]:
        try:
            if message.actor_name == self.unit_actor:
                lane = _unit_args(message)[5]
                return [(lane, message.message_id)] if lane else []
            if message.actor_name == self.dispatch_actor:
                found = self.plans.get(rid_of(message))
                units = found[1] if found is not None else None
                if units is None:
                    body, received_at, delivery_id = _dispatch_args(message)
                    events = decode_delivery(body, delivery_id=delivery_id, received_at=received_at)
                    units = self.units(events, message.message_id)
                return [(unit.lane, unit.uid) for unit in units if unit.lane]
        except Exception:
            logger.exception("wa-middleware: cannot tell the lanes of message %s", message.message_id)
        return []

    def _run_chain(self, taken: list[Any]) -> None:
        """Run the lane heads FINISH handed to this thread, each with the units queued right behind it.

        ``taken`` holds (head id, head message, units ahead) triples: FINISH read up to `AHEAD` units
        behind each head it handed over. Nobody else may run those before the head moves on, so this
        thread runs the head and then them, in lane order, stopping at the first that holds the lane
        (a failure waiting for its retry), and finishes the run in one FINISH call, whose records each
        take the next unit over as head in turn: one round trip for up to `AHEAD` ordered units
        instead of one each. What that call hands over next is run the same way.
        """
        import dramatiq

        if getattr(_chain, "active", False):  # called from inside a chain: the outer loop runs them
            _chain.pending.extend(taken)
            return
        _chain.active = True
        _chain.pending = list(taken)
        try:
            while _chain.pending:
                head, data, ahead = _chain.pending[:3]
                del _chain.pending[:3]
                run: list[tuple[dramatiq.Message[Any], Ops]] = []
                moved = True
                try:
                    for stored in (data, *ahead[1::2]):
                        if run and (not moved or _chain.budget <= 0):
                            break
                        self.lease.ensure()
                        message = dramatiq.Message.decode(stored)
                        ops, moved = self._unit_ops(message)
                        run.append((message, ops))
                        _chain.budget -= 1
                except BaseException as exc:
                    # Not run to its finish (Redis trouble, a time limit, shutdown): record what ran,
                    # and give the unit that did not and the rest back to the queue, as dramatiq does
                    # with prefetched messages, rather than leave them in our acks, where a live
                    # worker's heartbeat would keep them for ever.
                    pending, _chain.pending = _chain.pending, []
                    if isinstance(exc, Fenced):
                        return  # dropped: what it held runs elsewhere
                    heads = [h.decode() for h in pending[::3]]
                    if run:  # the unit that failed is the head the run's FINISH hands over
                        heads += [h.decode() for h in (self.finish_all(run, chained=True, run=True) or [])[::3]]
                    else:
                        heads.append(head.decode())
                    logger.exception("wa-middleware: a chained lane head failed; requeueing %d", len(heads))
                    self.lease.requeue(heads)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                _chain.pending.extend(self.finish_all(run, chained=True, run=True) or [])
        finally:
            _chain.active = False

    def _not_run(self, unit: Unit, exc: Fenced) -> None:
        """An ordered callback refused to start (`Lease.ordered`): this process was presumed dead, so
        the unit's message runs elsewhere. Nothing is recorded for it here (this process's FINISH no
        longer applies), and it is no failure: no retry, no dead letter."""
        logger.warning("callback %s not run on %s %s: %s", unit.callback.name, unit.event.kind, _event_id(unit), exc)

    def _failed(self, unit: Unit, attempt: int, exc: BaseException, ops: Ops) -> bool:
        """Hand a failed unit over to its next try, or to the dead letters; True if it will be retried."""
        from dramatiq.common import compute_backoff

        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=30))
        error = _first_line(exc)
        retryable = getattr(exc, "retryable", True) is not False
        event_id = _event_id(unit)
        if retryable and attempt < self.max_retries:
            logger.warning(
                "callback %s failed on %s %s, try %d of %d: %s; retrying it alone",
                unit.callback.name, unit.event.kind, event_id, attempt + 1, self.max_retries + 1, error,
            )  # fmt: skip
            metrics.callback_retry(unit.callback.name)
            _, delay = compute_backoff(attempt, factor=self.min_backoff, max_backoff=self.max_backoff)
            rid = str(uuid.uuid4())
            retry = self._unit_message(unit, attempt + 1, rid=rid, traceback=tb)
            ops.retry(unit.key, unit.callback.name, unit.uid, rid, retry.encode(), int(time.time() * 1000) + delay)
            return True
        note = None
        if unit.lane:
            note = f"ordered: the conversation {KeyLayout.conversation_of(unit.lane)} moved on without this event"
        rid = str(uuid.uuid4())
        logger.error(
            "callback %s failed on %s %s, try %d of %d: %s; %s: dead letter %s",
            unit.callback.name, unit.event.kind, event_id, attempt + 1, self.max_retries + 1, error,
            "not retryable" if not retryable else "no tries left", rid,
        )  # fmt: skip
        metrics.dead_letter(unit.callback.name)
        dead = self._unit_message(
            unit, attempt, rid=rid, traceback=tb, wa_error=f"{type(exc).__name__}: {exc}", wa_note=note
        )
        ops.dead(unit.key, unit.callback.name, unit.uid, rid, dead.encode())
        if unit.lane:
            ops.pop_lane(unit.lane, unit.uid)
        return False

    def _unit_message(self, unit: Unit, attempt: int, *, rid: str, **extra: Any) -> Any:
        import dramatiq

        options: dict[str, Any] = {"redis_message_id": rid, "wa_attempt": attempt}
        options.update((k, v) for k, v in extra.items() if v is not None)
        return dramatiq.Message(
            queue_name=self.queue_name,
            actor_name=self.unit_actor,
            args=(
                unit.callback.name,
                unit.event.kind,
                _encode(unit.event.data),
                _encode(unit.event.ctx),
                unit.key,
                unit.lane,
            ),
            kwargs={},
            options=options,
            message_id=unit.uid,
            message_timestamp=int(time.time() * 1000),
        )


#: Per worker thread: how many lane heads it may still take over directly in the current message.
_chain = threading.local()

#: Lane heads one message may run back to back before the rest go through the queue again, so a
#: thread is not kept by one busy conversation for ever.
CHAIN_BUDGET = 32
#: Units behind a lane head FINISH hands over that the same thread runs and finishes with it.
AHEAD = 16

#: Deliveries that may follow one work item over its life (then the next ones wait in their lanes),
#: so that one busy conversation does not keep a thread for ever.
FOLLOW_LIMIT = 256
#: Deliveries attached to work items of this process at most, not run yet.
ATTACHED_LIMIT = 256

#: The group of a delivery attached to a holder: not a work item of its own.
_ATTACHED = "\0attached"
#: A holder's states: its work item may still take followers; it finished and recorded its work (its
#: lanes moved on); it stopped without (what follows it must not run before what it left).
_OPEN, _DONE, _STOPPED = "open", "done", "stopped"


class _Holder:
    """A work item of this process (a delivery or a batch) that runs ordered units, and the deliveries
    fetched since that follow it: claimed right behind its units in their lanes, run after them in
    its thread (`Dispatcher._follow_up`)."""

    __slots__ = ("blocked", "lanes", "pending", "state", "taken")

    def __init__(self, blocked: set[str] | None = None) -> None:
        self.pending: list[dramatiq.Message[Any]] = []
        self.state = _OPEN
        #: Lanes in which a unit it ran failed and waits for its retry: the later units there wait too.
        self.blocked: set[str] = blocked if blocked is not None else set()
        #: Lanes in which it ran or claimed a unit (whose tails may point at it).
        self.lanes: set[str] = set()
        #: Deliveries attached over its life.
        self.taken = 0


class _Follow:
    """The lanes' tails during one fetch's planning: which deliveries follow a work item, and after what.

    :param tails: a copy of the dispatcher's `_tails`, updated as the fetch's deliveries are planned.
    :param attached: deliveries attached and not run yet, before this fetch.
    """

    __slots__ = ("attach", "attached", "counts", "full", "tails")

    def __init__(self, tails: dict[str, tuple[str, _Holder]], attached: int) -> None:
        self.tails = tails
        self.attached = attached
        #: redis id -> the holder that delivery is planned to follow.
        self.attach: dict[str, _Holder] = {}
        #: id(holder) -> deliveries of this fetch planned to follow it.
        self.counts: dict[int, int] = {}
        #: A delivery could not follow its work item for lack of room: the fetch ends before it (stored
        #: in its lane instead, it would make every later one of its lane wait there too).
        self.full = False

    def afters(self, rid: str, units: list[Unit]) -> list[str] | None:
        """Each unit's ``after`` if the delivery follows one work item in all its lanes with a tail
        here (and there is room), else None (planned as ever)."""
        holders = {id(tail[1]): tail[1] for tail in (self.tails.get(u.lane) for u in units if u.lane) if tail}
        if len(holders) != 1:
            return None
        # Its state is not read here: a holder that finishes while the fetch is planned is followed all
        # the same, and `Dispatcher._hold_lanes` settles where its followers go (all of them alike).
        holder = next(iter(holders.values()))
        if self.attached >= ATTACHED_LIMIT or holder.taken + self.counts.get(id(holder), 0) >= FOLLOW_LIMIT:
            self.full = True
            return None
        afters: list[str] = []
        for unit in units:
            tail = self.tails.get(unit.lane) if unit.lane else None
            afters.append(tail[0] if tail else "")
            if unit.lane:
                self.tails[unit.lane] = (unit.uid, holder)
        self.attach[rid] = holder
        self.counts[id(holder)] = self.counts.get(id(holder), 0) + 1
        self.attached += 1
        return afters


class _Units(list[Unit]):
    """The units of one delivery, with the kinds of all its events (for the events metric)."""

    __slots__ = ("kinds",)

    def __init__(self) -> None:
        super().__init__()
        self.kinds: list[str] = []


#: Deliveries one batch holds at most (run by one thread, finished in one call).
BATCH = 16


def _groups(
    messages: Sequence[dramatiq.Message[Any]], units: list[list[Unit] | None], slots: int, dispatch_actor: str
) -> list[str]:
    """The batch of each fetched message ("" for none): enough batches for ``slots`` work items, at most
    `BATCH` deliveries each, except that one conversation's deliveries are never split.

    The deliveries of one conversation go to one batch, however many: in one batch they run one after
    the other in its thread, where split between work items the later ones would wait in the lane for
    the earlier, stored and handed over one by one. Several conversations share a batch, so that
    ordered deliveries make batches as full as unordered ones (a batch per conversation made three
    times as many FINISH calls over 20 conversations).
    """
    deliveries = sum(
        1 for m, u in zip(messages, units, strict=True) if u is not None and m.actor_name == dispatch_actor
    )
    size = max(1, min(BATCH, -(-deliveries // max(slots, 1)))) if slots else 1
    by_lane: dict[str, list[int]] = {}  # in the order of their first delivery
    for index, (message, message_units) in enumerate(zip(messages, units, strict=True)):
        if message_units is None or message.actor_name != dispatch_actor:
            continue
        lane = next((unit.lane for unit in message_units if unit.lane), "") or f"\0{index}"  # unordered: alone
        by_lane.setdefault(lane, []).append(index)
    out = [""] * len(messages)
    group, filled = -1, size
    for indices in by_lane.values():
        if size == 1 and len(indices) == 1:
            continue  # alone: a work item of its own
        if filled + len(indices) > size:
            group, filled = group + 1, 0
        for index in indices:
            out[index] = f"g{group}"
        filled += len(indices)
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _event_id(unit: Unit) -> str:
    """The event's own id for a log line (message or status id), else its idempotency key."""
    data: Any = unit.event.data
    return str(getattr(data, "id", None) or unit.key.rsplit(":idem:", 1)[-1])


def _text(value: Any) -> str:
    """``value`` if it is a str: a message from elsewhere (a foreign producer) may carry anything in
    the fields the scripts read, and one that cannot be sent must be planned as unplannable, not fail
    every fetch at the head of the queue."""
    if not isinstance(value, str):
        raise TypeError(f"expected a str, got {type(value).__name__}")
    return value


def rid_of(message: dramatiq.Message[Any]) -> str:
    """The id of a message in Redis (dramatiq's own id for one never stored there)."""
    return str(message.options.get("redis_message_id", message.message_id))


def _dispatch_args(message: dramatiq.Message[Any]) -> tuple[bytes, int, str | None]:
    args = message.args
    body = args[0]
    if isinstance(body, str):  # sent through dramatiq's JSON encoder
        body = body.encode()
    return body, int(args[1]), args[2] if len(args) > 2 else message.kwargs.get("delivery_id")


def _unit_args(message: dramatiq.Message[Any]) -> tuple[str, str, bytes, bytes, str, str]:
    """A unit message's args: callback name, event kind, event, context (MessagePack), idempotency key, lane."""
    name, kind, data, ctx, key, lane = message.args
    return name, kind, data, ctx, key, lane
