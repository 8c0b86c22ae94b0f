"""A `RedisBroker` whose consumer takes deliveries off the queue and plans them in one step.

Stock dramatiq pops message ids with one script per fetch. Here a fetch first peeks at the
head of the queue, decodes the deliveries there, then one script takes them off the head (only
while the head is still what was peeked: two workers never both take a message) and claims
their units. Taking and planning in one atomic step is what makes conversation lanes follow
the order of the queue exactly, and it batches the deduplication round trips of a whole fetch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed

from .scripts import PEEK

if TYPE_CHECKING:
    from .dispatch import Dispatcher

__all__ = ["WebhookBroker"]

#: The longest a consumer sleeps between two polls of an empty queue, in milliseconds.
IDLE_MS = 100


class WebhookBroker(RedisBroker):
    """dramatiq's Redis broker, with a planning consumer on the webhook's queue."""

    def __init__(self, *, dispatcher: Dispatcher, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.dispatcher = dispatcher
        self.peek = self.client.register_script(PEEK)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _PlanningConsumer


class _PlanningConsumer(_RedisConsumer):
    def ack(self, message: Any) -> None:
        acked = self.broker.dispatcher.acked
        rid = message.options.get("redis_message_id")
        # A plan its actor never took (a message a middleware skipped, a foreign actor) ends here.
        self.broker.dispatcher.plans.pop(rid, None)
        if rid in acked:  # already acked by the finish script of this delivery
            acked.discard(rid)
            self.queued_message_ids.discard(message.message_id)
            return
        super().ack(message)  # type: ignore[no-untyped-call]

    def nack(self, message: Any) -> None:
        rid = message.options.get("redis_message_id")
        self.broker.dispatcher.plans.pop(rid, None)
        self.broker.dispatcher.acked.discard(rid)
        super().nack(message)  # type: ignore[no-untyped-call]

    def _fetch(self, count: int) -> list[Any]:
        broker: WebhookBroker = self.broker
        if self.queue_name != broker.dispatcher.queue_name:
            return [data for data in broker.do_fetch(self.queue_name, count) if data is not None]
        full = f"{broker.namespace}:{self.queue_name}"
        decode = dramatiq.get_encoder().decode
        for _ in range(20):  # lost races against other workers taking the same head: try again at once
            peeked = broker.peek(args=[full, count])
            if not peeked:
                return []
            ids, datas = peeked
            messages: list[dramatiq.Message[Any]] = []
            for rid, data in zip(ids, datas, strict=True):
                try:
                    fields = decode(data)
                    fields["args"] = tuple(fields["args"])
                    message: dramatiq.Message[Any] = dramatiq.Message(**fields)
                except Exception:
                    # No body (dramatiq#266) or not a message: taken off the queue like any other; the
                    # worker finds no actor for it and moves it to the dead letters.
                    message = dramatiq.Message(queue_name=self.queue_name, actor_name="wa.undecodable", args=(),
                                               kwargs={}, options={"redis_message_id": rid.decode()})  # fmt: skip
                messages.append(message)
            taken = broker.dispatcher.plan(messages, pop=True)
            if taken:
                return messages[: len(taken)]
        return []

    def __next__(self) -> Any:
        # dramatiq's own loop, with `_fetch` in place of the broker's fetch script.
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
                    if self.outstanding_message_count < self.prefetch:
                        self.message_cache = messages = self._fetch(self.prefetch - self.outstanding_message_count)
                    if not messages:
                        # A short idle backoff: lane heads are enqueued one at a time as their
                        # predecessors finish, and must not wait out dramatiq's 1 s idle sleep.
                        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=min(self.timeout, IDLE_MS))
                        time.sleep(backoff_ms / 1000)
                        return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
