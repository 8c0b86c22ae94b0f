"""A `RedisBroker` whose consumer takes deliveries off the queue and plans them in one step.

Stock dramatiq pops message ids with one script per fetch. Here a fetch first peeks at the
head of the queue, decodes the deliveries there, then one script takes them off the head (only
while the head is still what was peeked: two workers never both take a message) and claims
their units. Taking and planning in one atomic step is what makes conversation lanes follow
the order of the queue exactly, and it batches the deduplication round trips of a whole fetch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, overload

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed

from ..events.callbacks import Registry
from ..keys import KeyLayout
from ..redis_url import sync_client
from ..settings import WorkerSettings
from ._dramatiq import RedisConsumer
from .dispatch import _ATTACHED, ATTACHED_LIMIT, BATCH, Dispatcher, rid_of
from .encoder import install
from .lease import TRANSIENT
from .recovery import Recovery

__all__ = ["Runtime", "WebhookBroker"]

#: The longest a consumer sleeps between two polls of an empty queue, in milliseconds.
IDLE_MS = 100

#: Deliveries one fetch takes at most.
MAX_FETCH = 256


class WebhookBroker(RedisBroker):
    """dramatiq's Redis broker, with a planning consumer on the webhook's queue."""

    def __init__(self, *, dispatcher: Dispatcher, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.dispatcher = dispatcher

    @property
    def consumer_class(self) -> type[RedisConsumer]:
        return _PlanningConsumer


class _PlanningConsumer(RedisConsumer):
    """Takes and plans deliveries in one step; acks, rejects and requeues through the lease's scripts
    (this process's own acks set), never through dramatiq's (on the webhook's queue)."""

    def _ours(self) -> bool:
        return bool(self.queue_name == self.broker.dispatcher.queue_name)

    def ack(self, message: Any) -> None:
        if not self._ours():
            return super().ack(message)  # type: ignore[no-any-return,no-untyped-call]
        dispatcher: Dispatcher = self.broker.dispatcher
        rid = rid_of(message)
        self.queued_message_ids.discard(message.message_id)
        if rid in dispatcher.acked:  # already acked by the finish script of this delivery
            dispatcher.acked.discard(rid)
            dispatcher.plans.pop(rid, None)
            return
        # Not run by our actors (a middleware skipped it, a foreign actor ran it): its plan ends there.
        dispatcher.skip(message)

    def nack(self, message: Any) -> None:
        if not self._ours():
            return super().nack(message)  # type: ignore[no-any-return,no-untyped-call]
        dispatcher: Dispatcher = self.broker.dispatcher
        rid = rid_of(message)
        self.queued_message_ids.discard(message.message_id)
        if rid in dispatcher.acked:
            # Finished already (its outcome recorded), then failed on the way out: nothing to bury.
            dispatcher.acked.discard(rid)
            return
        dispatcher.nack(message)
        dispatcher.acked.discard(rid)

    def requeue(self, messages: Any) -> None:
        if not self._ours():
            return super().requeue(messages)  # type: ignore[no-any-return,no-untyped-call]
        self.broker.dispatcher.lease.requeue(self._rids(messages))

    def _rids(self, messages: Any) -> list[str]:
        """The redis ids of messages, those of batches expanded to their deliveries, and the deliveries
        that followed them, which go back to the queue with them."""
        dispatcher: Dispatcher = self.broker.dispatcher
        rids: list[str] = []
        for message in messages:
            rid = rid_of(message)
            if rid.startswith("batch:"):
                rids += [rid_of(m) for m in dispatcher.batches.pop(rid, ())]
            else:
                rids.append(rid)
        return rids + dispatcher.abandon(rids)

    def close(self) -> None:
        # Prefetched messages not handed to a worker thread yet: back to the queue now, or, with
        # Redis out of reach, forgotten here so that reconciling requeues them once it answers.
        if self._ours() and self.message_cache:
            lease = self.broker.dispatcher.lease
            rids = self._rids([m for m in self.message_cache if isinstance(m, dramatiq.Message)])
            self.message_cache = []
            try:
                lease.scripts.requeue(
                    keys=[lease.keys.acks(lease.broker_id), lease.keys.queue, lease.keys.messages], args=rids
                )
            except TRANSIENT:
                pass
            lease.release(rids)
        super().close()

    def _fetch(self, slots: int) -> list[Any]:
        """Take up to ``slots`` work items: deliveries, grouped into batches when the queue is deep;
        and, while work items of this process run ordered units, the deliveries that follow them
        (`Dispatcher.plan`), which are no work items of their own."""
        broker: WebhookBroker = self.broker
        dispatcher = broker.dispatcher
        if self.queue_name != dispatcher.queue_name:
            return [data for data in broker.do_fetch(self.queue_name, slots) if data is not None]
        room = ATTACHED_LIMIT - dispatcher.attached if dispatcher.followable() else 0
        count = min(slots * BATCH + room, MAX_FETCH)
        taken = self._take(count, slots, slots * BATCH) if count > 0 else []
        return self._batches(taken)

    def _batches(self, messages: list[dramatiq.Message[Any]]) -> list[dramatiq.Message[Any]]:
        """The work items of a fetch: the deliveries PLAN put in one group become one batch message."""
        dispatcher: Dispatcher = self.broker.dispatcher
        groups: dict[str, list[dramatiq.Message[Any]]] = {}
        out: list[dramatiq.Message[Any] | str] = []
        for message in messages:
            group = dispatcher.groups.pop(rid_of(message), "")
            if group == _ATTACHED:  # follows a work item already out: run by it, or back on the queue
                self.followed = True
                continue
            if not group:
                out.append(message)
            elif group in groups:
                groups[group].append(message)
            else:
                groups[group] = [message]
                out.append(group)  # the batch takes the place of its first delivery
        items: list[dramatiq.Message[Any]] = []
        for item in out:
            if not isinstance(item, str):
                items.append(item)
                continue
            members = groups[item]
            if len(members) == 1:
                items.append(members[0])
                continue
            batch_id = f"batch:{uuid.uuid4()}"
            dispatcher.batches[batch_id] = members
            items.append(dramatiq.Message(queue_name=self.queue_name, actor_name=dispatcher.batch_actor, args=(),
                                          kwargs={}, options={"redis_message_id": batch_id}))  # fmt: skip
        return items

    def _take(self, count: int, slots: int, others: int) -> list[dramatiq.Message[Any]]:
        """Peek at up to ``count`` messages and take them, at most ``others`` that follow no work item."""
        broker: WebhookBroker = self.broker
        dispatcher = broker.dispatcher
        if dispatcher.lease.halted:
            return []
        keys = dispatcher.keys
        for _ in range(20):  # lost races against other workers taking the same head: try again at once
            peeked = dispatcher.lease.scripts.peek(keys=[keys.queue, keys.messages, keys.retries], args=[count])
            if not peeked:
                return []
            messages = _Peeked(self.queue_name, *peeked)
            taken = broker.dispatcher.plan(messages, pop=True, slots=slots, others=others)
            if taken:
                return messages[: len(taken)]
            if not others or dispatcher.cut:  # only followers wanted and the head is none, or no room
                return []
        return []

    def __next__(self) -> Any:
        # A copy of dramatiq's own `_RedisConsumer.__next__` (as in dramatiq 1.17.0 to 2.2.1, unchanged
        # across that range; tests/worker/test_dramatiq_contract.py checks it), with `_fetch` in place
        # of the broker's fetch script and a shorter idle sleep.
        try:
            while True:
                try:
                    item = self.message_cache.pop(0)
                    self.misses = 0
                    message = item if isinstance(item, dramatiq.Message) else dramatiq.Message.decode(item)
                    self.queued_message_ids.add(message.message_id)
                    return dramatiq.MessageProxy(message)
                except IndexError:
                    messages: list[Any] = []
                    self.followed = False
                    if self.outstanding_message_count < self.prefetch:
                        self.message_cache = messages = self._fetch(self.prefetch - self.outstanding_message_count)
                    if not messages and self.followed:
                        # Deliveries taken to follow work items already out make no work items of their
                        # own: look again at once (the next ones may follow too, or need a work item).
                        self.misses = 0
                        continue
                    if not messages:
                        # A short idle backoff: lane heads are enqueued one at a time as their
                        # predecessors finish, and must not wait out dramatiq's 1 s idle sleep.
                        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=min(self.timeout, IDLE_MS))
                        time.sleep(backoff_ms / 1000)
                        return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]


class _Peeked(Sequence[dramatiq.Message[Any]]):
    """The messages a fetch peeked at, decoded as planning reaches them: a fetch that ends early (only
    followers wanted, and the head is none) decodes one, not the hundreds it peeked at."""

    __slots__ = ("datas", "decode", "decoded", "ids", "queue_name")

    def __init__(self, queue_name: str, ids: list[bytes], datas: list[bytes]) -> None:
        self.queue_name = queue_name
        self.ids = ids
        self.datas = datas
        self.decode = dramatiq.get_encoder().decode
        self.decoded: dict[int, dramatiq.Message[Any]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> dramatiq.Message[Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dramatiq.Message[Any]]: ...

    def __getitem__(self, index: int | slice) -> dramatiq.Message[Any] | list[dramatiq.Message[Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.ids)))]
        message = self.decoded.get(index)
        if message is None:
            message = self.decoded[index] = self._decode(self.ids[index], self.datas[index])
        return message

    def _decode(self, rid: bytes, data: bytes) -> dramatiq.Message[Any]:
        try:
            fields = self.decode(data)
            fields["args"] = tuple(fields["args"])
            return dramatiq.Message(**fields)
        except Exception:
            # No body (dramatiq#266) or not a message: taken off the queue like any other; the worker
            # finds no actor for it and moves it to the dead letters.
            return dramatiq.Message(queue_name=self.queue_name, actor_name="wa.undecodable", args=(), kwargs={},
                                    options={"redis_message_id": rid.decode()})  # fmt: skip


class Runtime:
    """The worker side of one webhook: its broker, dispatcher and the two actors, built together.

    The facade (`Webhook`) builds one lazily, the first time a process needs the broker (a worker,
    dev mode, ``stats()``), so a web process never imports dramatiq.
    """

    def __init__(self, *, url: str, registry: Registry, settings: WorkerSettings, keys: KeyLayout) -> None:
        from dramatiq.middleware import CurrentMessage

        self.settings = settings
        self.dispatcher = Dispatcher(registry=registry, settings=settings, keys=keys)
        broker = WebhookBroker(
            client=sync_client(url),
            namespace=keys.namespace,
            dispatcher=self.dispatcher,
            heartbeat_timeout=int(settings.recovery_timeout * 1000),
        )
        broker.add_middleware(CurrentMessage())
        self.dispatcher.bind(broker)
        broker.add_middleware(Recovery(self.dispatcher.lease))
        self.broker = broker
        # Callback failures are retried per unit by the dispatcher, and Redis trouble is waited out
        # there: dramatiq's own retries of a whole message would only run it again. What still fails
        # a message (it cannot be planned, a callback raised BaseException) goes to the dead letters.
        queue, retries = settings.queue_name, 0
        self.actors: dict[str, dramatiq.Actor[Any, Any]] = {
            "dispatch": dramatiq.actor(
                broker=broker, actor_name=settings.dispatch_actor, queue_name=queue, max_retries=retries
            )(self._dispatch),
            "callback": dramatiq.actor(
                broker=broker, actor_name=settings.callback_actor, queue_name=queue, max_retries=retries
            )(self._run_unit),
            "batch": dramatiq.actor(
                broker=broker, actor_name=self.dispatcher.batch_actor, queue_name=queue, max_retries=retries
            )(self._run_batch),
        }
        self._worker: dramatiq.Worker | None = None

    @staticmethod
    def _current_message() -> dramatiq.Message[Any]:
        from dramatiq.middleware import CurrentMessage

        message = CurrentMessage.get_current_message()
        if message is None:
            raise RuntimeError("not running inside a dramatiq worker")
        return message

    # The actors' signatures are the messages' args, as the request path writes them.
    def _dispatch(self, body: bytes, received_at: int, delivery_id: str | None = None) -> None:
        self.dispatcher.run_delivery(self._current_message())

    def _run_unit(self, *args: Any) -> None:
        self.dispatcher.run_unit(self._current_message())

    def _run_batch(self) -> None:
        self.dispatcher.run_batch(self._current_message())

    def stats(self) -> dict[str, int]:
        raw: dict[bytes, bytes] = self.broker.client.hgetall(self.dispatcher.keys.stats)  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}

    def start_worker(self, threads: int) -> dramatiq.Worker:
        """Run worker threads in this process (dev mode)."""
        install()
        worker = dramatiq.Worker(
            self.broker, queues={self.settings.queue_name}, worker_threads=threads, worker_timeout=100
        )
        worker.start()
        self._worker = worker
        return worker

    def stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def close(self) -> None:
        self.stop_worker()
        self.broker.client.close()
