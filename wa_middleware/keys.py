"""Every Redis key the package reads or writes, named in one place.

`KeyLayout` is the one copy of the key names: the request path, the worker, the Lua scripts (which
receive their keys from it, never build them), the tooling and the docs' key table
(``docs/internals.md``) all follow it. dramatiq's own keys are named exactly as its Redis broker
names them, so stock maintenance and requeueing keep working on them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyLayout", "rate_key", "sent_key"]


def sent_key(prefix: str, unit_key: str) -> str:
    """Hash ``n -> result`` of the sends one callback run made (the messaging ledger)."""
    return f"{prefix}:sent:{unit_key}"


def rate_key(prefix: str, number: str) -> str:
    """The next free send slot of one business number (the shared rate limit)."""
    return f"{prefix}:rate:{number}"


@dataclass(frozen=True)
class KeyLayout:
    """The Redis keys of one `Webhook`.

    :param namespace: dramatiq's key prefix (``Webhook(namespace=...)``).
    :param queue_name: the dramatiq queue deliveries go to.
    :param name: the webhook's name; prefixes its own (non-dramatiq) keys.
    """

    namespace: str = "dramatiq"
    queue_name: str = "wa_middleware"
    name: str = "wa"

    # -- dramatiq's keys, as its RedisBroker names them ----------------------------------------

    @property
    def queue(self) -> str:
        """List of the ids of messages ready to run, head first."""
        return f"{self.namespace}:{self.queue_name}"

    @property
    def messages(self) -> str:
        """Hash ``redis message id -> encoded message`` of the ready queue."""
        return f"{self.queue}.msgs"

    @property
    def delay_queue(self) -> str:
        """List of messages waiting for their ``eta`` (retries in their backoff); dramatiq's ``.DQ``."""
        return f"{self.queue}.DQ"

    @property
    def delay_messages(self) -> str:
        return f"{self.delay_queue}.msgs"

    @property
    def dead_letters(self) -> str:
        """Sorted set of dead-lettered message ids by time; dramatiq's ``.XQ``."""
        return f"{self.queue}.XQ"

    @property
    def dead_messages(self) -> str:
        return f"{self.dead_letters}.msgs"

    @property
    def dramatiq_heartbeats(self) -> str:
        """dramatiq's own heartbeats (client clocks); this package's workers keep theirs in `heartbeats`."""
        return f"{self.namespace}:__heartbeats__"

    # -- the request path's own keys -----------------------------------------------------------

    @property
    def recorded(self) -> str:
        """Stream of accepted deliveries, raw, for ``wa-middleware replay`` (``Webhook(record=True)``)."""
        return f"{self.queue}.recorded"

    # -- the worker's own keys, under <namespace>:<name>: --------------------------------------

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:{self.name}"

    def idem(self, event_key: str) -> str:
        """Hash of one event's callbacks in flight: ``c|<owner>`` (claimed), ``x|<owner>`` (dead); ``d``
        (done) only for events without a done-mark (`worker/marks.py`)."""
        return f"{self.prefix}:idem:{event_key}"

    @property
    def done_marks(self) -> str:
        """Prefix of the done-mark sets, ``<prefix>dn:<hour>:<level>:<shard>`` (sets of 64-bit
        digests) and ``<prefix>dn:<hour>`` (the hour's deepest level): see `worker/marks.py`."""
        return f"{self.prefix}:dn:"

    def lane(self, conversation: str) -> str:
        """List of the ordered units of one conversation, head first: only the head may run."""
        return f"{self.prefix}:lane:{conversation}"

    @property
    def units(self) -> str:
        """Hash ``unit id -> encoded message`` of ordered units waiting in a lane."""
        return f"{self.prefix}:units"

    @property
    def stats(self) -> str:
        """Hash of counters: ``duplicates``, ``dead_lettered``, ``stale_statuses``."""
        return f"{self.prefix}:stats"

    # -- the worker processes' leases, kept apart from dramatiq's (whose maintenance, on client
    # clocks, would requeue them) -------------------------------------------------------------

    @property
    def heartbeats(self) -> str:
        """Sorted set ``broker id -> last heartbeat``, in Redis's own clock (ms): a worker process's lease."""
        return f"{self.prefix}:heartbeats"

    @property
    def acks_prefix(self) -> str:
        return f"{self.prefix}:acks:"

    def acks(self, broker_id: str) -> str:
        """Set of the redis message ids a worker process took off the queue and has not finished."""
        return f"{self.acks_prefix}{broker_id}"

    @property
    def retries(self) -> str:
        """Sorted set ``redis message id -> due time (ms)`` of unit retries waiting out their backoff.

        Due ones move to the queue atomically, so a retry is never held in a worker's memory."""
        return f"{self.prefix}:retries"

    @property
    def epoch(self) -> str:
        """A marker written once: its disappearance means Redis lost its data."""
        return f"{self.prefix}:epoch"

    # -- replying (wa_middleware.messaging) ------------------------------------------------------

    def sent(self, unit_key: str) -> str:
        """The sends recorded for one (event, callback) run, so a rerun does not send them again."""
        return sent_key(self.prefix, unit_key)

    def rate(self, number: str) -> str:
        """The shared per-number rate limit's state."""
        return rate_key(self.prefix, number)

    @staticmethod
    def conversation_of(lane: str) -> str:
        """The conversation a lane key names (for messages to the operator)."""
        return lane.rsplit(":lane:", 1)[-1]
