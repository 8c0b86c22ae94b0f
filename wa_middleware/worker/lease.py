"""A worker process's lease on what it took from the queue, kept on Redis's own clock.

A worker process takes messages into its own acks set (`KeyLayout.acks`) and heartbeats in
`KeyLayout.heartbeats`, both apart from dramatiq's keys, with Redis's clock (so machines whose
clocks disagree do not see each other as dead). The heartbeat runs every ``timeout / 6`` in the
recovery thread (`recovery.py`) and with every fetch. A process whose heartbeat is older than
``timeout`` is presumed dead: the next heartbeat of a live process moves what it held back onto
the queue (RECOVER), unless that live process's own heartbeat is stale too (Redis was out of reach
for everyone: nobody is presumed dead for that).

What makes this safe when the presumed-dead process was only paused (SIGSTOP, a callback holding
the GIL, a stalled VM):

* **Fencing.** Its heartbeat entry is gone, so its next heartbeat or fetch is refused (fenced):
  it drops everything it held without running it and goes on under a new broker id. FINISH applies
  only while the message is still in the acks of the process that took it, so a callback that was
  already running when the process froze may finish, but its outcome is not recorded, no lane is
  handed over and nothing is acked in its name: the copy that runs elsewhere is the only one that counts.
* **The lease.** A process knows, on its own monotonic clock, until when its last heartbeat
  protects it; before it starts a message after that, it heartbeats first (and learns it was fenced).
* **The watchdog** (`watchdog.py`, in ``wa-middleware worker`` processes): a process of its own that
  SIGKILLs this one before its lease can be taken over while an ordered callback is in flight, so that
  callback never overlaps its rerun elsewhere (`ordered`).
* **Reconciling.** What Redis says the process holds (its acks) is compared with what it knows it
  holds; a message it does not know of two heartbeats in a row (a reply lost after a fetch or a
  finish that handed over a lane head) goes back to the queue.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from ..errors import ConfigurationError
from ..keys import KeyLayout
from ..memory import policy_error
from .scripts import Scripts

if TYPE_CHECKING:
    from .watchdog import Watchdog

__all__ = ["TRANSIENT", "Fenced", "Lease"]

logger = logging.getLogger("wa_middleware.worker")

#: Redis errors worth waiting out: the server restarts, is out of reach, or a reply was lost.
TRANSIENT: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)

#: Seconds a stopping worker keeps retrying a Redis call before it leaves the message to recovery.
STOP_GRACE = 5.0

T = TypeVar("T")


class Fenced(Exception):
    """This worker process was presumed dead: what it held now runs elsewhere."""


class Lease:
    """The lease of one worker process (one broker id at a time).

    :param broker: the dramatiq broker (its ``broker_id`` is the lease's name and changes when fenced).
    :param keys: the key layout.
    :param timeout: seconds without a heartbeat after which a process is presumed dead.
    :param dead_message_ttl: milliseconds dead letters are kept.
    """

    def __init__(self, broker: Any, keys: KeyLayout, timeout: float, dead_message_ttl: int) -> None:
        self.broker = broker
        self.keys = keys
        self.timeout = timeout
        self.dead_message_ttl = dead_message_ttl
        self.scripts = Scripts(broker.client)
        #: Redis message id -> the broker id it was taken under, for every message this process holds.
        self.held: dict[str, str] = {}
        #: Messages this process held when it was fenced: never run or finished here.
        self.dropped: set[str] = set()
        #: Set when the worker is shutting down: Redis calls then give up after `STOP_GRACE`.
        self.stopping = threading.Event()
        #: Why the worker stopped taking work (Redis lost its data, a refused setting), or None.
        self.halted: str | None = None
        #: Called once with the reason when the worker halts (the worker entry makes it exit).
        self.on_halt: Callable[[str], None] | None = None
        #: The watchdog of this process (set by the worker entry; None elsewhere: dev mode, tests).
        self.watchdog: Watchdog | None = None
        self.fresh = True  # the current broker id is not registered yet
        self.epoch: str | None = None
        self._until = 0.0  # monotonic time until which the last heartbeat protects this process
        self._strikes: dict[str, int] = {}
        self._policy_checked = -1e9
        self._lock = threading.RLock()

    @property
    def broker_id(self) -> str:
        return str(self.broker.broker_id)

    # -- holding -----------------------------------------------------------------------------

    def hold(self, rids: Iterable[str], broker_id: str) -> None:
        with self._lock:
            for rid in rids:
                self.held[rid] = broker_id

    def release(self, rids: Iterable[str]) -> None:
        with self._lock:
            for rid in rids:
                self.held.pop(rid, None)

    def owner(self, rid: str) -> str:
        """The broker id ``rid`` was taken under (the current one for a message not seen taken)."""
        return self.held.get(rid) or self.broker_id

    def extend(self, sent: float) -> None:
        """A heartbeat sent at monotonic time ``sent`` landed."""
        with self._lock:
            self.fresh = False
            self._until = max(self._until, sent + self.timeout * 0.9)
        if self.watchdog is not None:
            self.watchdog.landed(sent)

    def valid(self) -> bool:
        return time.monotonic() < self._until

    def ensure(self) -> None:
        """Make sure the lease still holds before starting a message; raises `Fenced` if not."""
        if not self.valid():
            self.heartbeat()

    def ordered(self) -> AbstractContextManager[None]:
        """Around an ordered callback: armed in the watchdog while it runs, started only while the last
        heartbeat leaves time before the watchdog's kill (else heartbeat first, unarmed).

        :raises Fenced: (on entering) this process was presumed dead meanwhile: the unit runs elsewhere.
        """
        return _Ordered(self, self.watchdog) if self.watchdog is not None else nullcontext()

    # -- Redis calls -------------------------------------------------------------------------

    def call(self, what: str, fn: Callable[[], T]) -> T | None:
        """Call ``fn`` until Redis answers; None if the worker stops while Redis stays out of reach."""
        delay, started, warned = 0.05, time.monotonic(), 0.0
        while True:
            try:
                return fn()
            except TRANSIENT as exc:
                now = time.monotonic()
                if self.stopping.is_set() and now - started > STOP_GRACE:
                    logger.error("wa-middleware: gave up trying to %s while stopping (%s)", what, type(exc).__name__)
                    return None
                if now - warned > 10:
                    logger.warning("wa-middleware: cannot %s (%s); retrying until Redis answers", what, exc)
                    warned = now
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- checks ------------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Refuse a Redis whose memory policy could evict deliveries or once-per-event records.

        :raises ConfigurationError: naming the setting and the fix.
        """
        error = policy_error(self.broker.client.info("memory"))
        self._policy_checked = time.monotonic()
        if error is not None:
            raise ConfigurationError(error)

    def _recheck_policy(self) -> None:
        if time.monotonic() - self._policy_checked >= 60:
            try:
                self.preflight()
            except ConfigurationError as exc:
                self.halt(str(exc))

    # -- heartbeat, recovery, fencing ------------------------------------------------------------

    def heartbeat(self) -> int:
        """Heartbeat (RECOVER); returns how many messages of dead processes went back on the queue.

        :raises Fenced: this process was presumed dead.
        """
        bid, sent = self.broker_id, time.monotonic()
        k = self.keys
        result = self.call(
            "heartbeat",
            lambda: self.scripts.recover(
                keys=[k.heartbeats, k.queue, k.messages, k.dead_letters, k.dead_messages, k.epoch],
                args=[
                    bid,
                    int(self.timeout * 1000),
                    k.acks_prefix,
                    "1" if self.fresh else "0",
                    self.dead_message_ttl,
                    str(uuid.uuid4()) if self.epoch is None else "",
                ],
            ),
        )
        if result is None:
            raise Fenced("stopping with Redis out of reach")
        state, requeued, epoch, created = (x.decode() if isinstance(x, bytes) else x for x in result)
        self._check_epoch(str(epoch), created == "1")  # first: a Redis that lost its data has lost our heartbeat too
        if self.halted:
            raise Fenced("halted")
        if state == "fenced":
            self.fence(bid)
            raise Fenced(bid)
        self.extend(sent)
        self._recheck_policy()
        if int(requeued):
            logger.warning("wa-middleware: requeued %s message(s) of worker processes presumed dead", requeued)
        return int(requeued)

    def fence(self, broker_id: str) -> None:
        """Drop everything held under ``broker_id`` and go on under a new id."""
        with self._lock:
            if self.broker_id != broker_id:
                return  # another thread did it already
            self.dropped.update(self.held)
            self.held.clear()
            self._strikes.clear()
            self.broker.broker_id = str(uuid.uuid4())
            self.fresh = True
            self._until = 0.0
        logger.error(
            "wa-middleware: this worker process was presumed dead (no heartbeat for %gs: paused, stalled or cut "
            "off from Redis); what it held runs on other workers and is dropped here; going on as %s",
            self.timeout, self.broker_id,
        )  # fmt: skip
        if self.watchdog is not None:
            self.watchdog.fenced()

    def _check_epoch(self, epoch: str, created: bool) -> None:
        if self.epoch is None:
            if created:
                logger.warning(
                    "wa-middleware: no %s marker in Redis: a first start on this Redis (or one that lost its data "
                    "before this worker started); marker written",
                    self.keys.epoch,
                )
            self.epoch = epoch
        elif epoch != self.epoch:
            self.lost()

    def lost(self) -> None:
        """Redis lost its data: stop taking work, loudly."""
        self.halt(
            f"Redis lost its data (the marker {self.keys.epoch} is gone): its once-per-event records are gone "
            "too, so redelivered events would run their callbacks again. The workers stop; check Redis's "
            "persistence (appendonly yes), then restart them"
        )

    def halt(self, reason: str) -> None:
        if self.halted is None:
            self.halted = reason
            logger.critical("wa-middleware: %s", reason)
            if self.on_halt is not None:
                self.on_halt(reason)

    # -- reconciling ---------------------------------------------------------------------------

    def reconcile(self) -> int:
        """Requeue what Redis says this process holds but the process does not know of (twice in a row)."""
        bid = self.broker_id
        members = {m.decode() for m in self.broker.client.smembers(self.keys.acks(bid))}
        with self._lock:
            unknown = {m for m in members if m not in self.held}
            self._strikes = {m: self._strikes.get(m, 0) + 1 for m in unknown}
            lost = [m for m, n in self._strikes.items() if n >= 2]
        if not lost:
            return 0
        requeued = self.requeue(lost, broker_id=bid)
        logger.warning(
            "wa-middleware: %d message(s) taken but not known to this worker (a lost reply) requeued", requeued
        )
        return requeued

    def requeue(self, rids: list[str], *, broker_id: str | None = None) -> int:
        """Give messages this process took back to the head of the queue, in order."""
        if not rids:
            return 0
        by_owner: dict[str, list[str]] = {}
        for rid in rids:
            by_owner.setdefault(broker_id or self.owner(rid), []).append(rid)
        count = 0
        k = self.keys
        for owner, ids in by_owner.items():

            def requeue(owner: str = owner, ids: list[str] = ids) -> Any:
                return self.scripts.requeue(keys=[k.acks(owner), k.queue, k.messages], args=ids)

            count += int(self.call("requeue messages", requeue) or 0)
        self.release(rids)
        with self._lock:
            for rid in rids:
                self._strikes.pop(rid, None)
        return count


class _Ordered:
    """`Lease.ordered` with a watchdog (a class, not a generator: it is entered around every ordered
    callback)."""

    __slots__ = ("lease", "watchdog")

    def __init__(self, lease: Lease, watchdog: Watchdog) -> None:
        self.lease = lease
        self.watchdog = watchdog

    def __enter__(self) -> None:
        while not self.watchdog.enter():
            try:
                self.lease.heartbeat()
            except Fenced:
                if self.lease.halted:
                    raise
                raise Fenced("presumed dead before an ordered callback started: it runs elsewhere, not here") from None

    def __exit__(self, *exc: object) -> None:
        self.watchdog.leave()
