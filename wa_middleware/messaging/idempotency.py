"""Replies not sent twice when a callback runs again: the send ledger.

The worker runs each (event, callback) unit at least once: a callback that fails after replying is
retried, a unit cut short by a killed worker runs again, a dead letter can be replayed. Without
care each run replies again. So every send made through a callback's `Replies` is keyed by

    (the unit key, n)    the unit key names the event and the callback, n counts this run's sends

and once the API has answered, its result (the returned wamid) is recorded under that key in
Redis. When the same unit runs again, its n-th send finds the n-th result and returns it, marked
``replayed``, instead of sending: a callback that replied, then failed, and is retried three times
sends one message.

The one window that remains
---------------------------
Between the moment the API accepts a message and the moment its answer is recorded in the ledger.
A run that ends inside that window leaves no record, and the next run of the unit sends the
message again. The ways to end there:

* the process is killed (SIGKILL, OOM, power) after the API accepted the send and before Redis
  stored the answer: a fraction of a millisecond on a local network, the answer's way back plus
  one Redis round trip;
* the answer is lost on its way back (a read timeout, a dropped connection: `TransportError` with
  ``maybe_sent``; the Cloud API takes no idempotency key, so nothing can tell whether it was sent);
* Redis does not take the record (the ledger retries it briefly, then logs and carries on: failing
  the callback would make the retry send again anyway);
* a second run of the same unit looks the send up inside the first run's window (a worker paused
  past its lease, resuming beside the run that replaced it).

Outside it, a send is made once per (unit, n). Two more things to know:

* The n-th send is matched by position. A callback that sends different things, or a different
  number of things, from one run to the next (it reads a clock, a random value, a database that
  changed) gets the recorded result of whatever was n-th before; a warning is logged when the
  recorded send had other content, and the recorded one stands, never re-sent.
* Marking as read is not recorded: doing it twice is harmless.

Keys: ``<prefix>:sent:<unit key>``, a hash ``n -> result``, expiring ``ttl`` seconds after its
last record (the webhook's ``dedupe_ttl``: as long as an event is remembered at all).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from typing import TYPE_CHECKING, Protocol

import msgspec

from ..keys import sent_key
from .errors import TransportError
from .types import Content, Reaction, SendResult, Text

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["AsyncReplies", "AsyncSendLedger", "AsyncSender", "Recorded", "Replies", "SendLedger", "Sender"]

logger = logging.getLogger("wa_middleware.messaging")

#: Tries of a ledger record before giving up (the message is sent already: see the module's docstring).
_RECORD_TRIES = (0.0, 0.05, 0.25)
_digest_encode = msgspec.msgpack.Encoder(order="deterministic").encode


class Recorded(msgspec.Struct, kw_only=True, frozen=True, array_like=True):
    """One ledger entry: the result, and a digest of what was sent (to notice a callback that changed)."""

    result: SendResult
    digest: str


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Recorded).decode


def digest_of(to: str, content: Content, reply_to: str | None) -> str:
    """A short digest of one send, equal for equal sends across processes."""
    data = _digest_encode((to, content.kind, content, reply_to))
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class _Keys:
    def __init__(self, prefix: str, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.prefix = prefix
        self.ttl_ms = int(ttl * 1000)

    def key(self, unit_key: str) -> str:
        return sent_key(self.prefix, unit_key)

    @staticmethod
    def entry(raw: object) -> Recorded | None:
        if raw is None:
            return None
        if not isinstance(raw, bytes):
            raise TypeError("the send ledger needs a Redis client with decode_responses=False")
        try:
            return _decode(raw)
        except msgspec.DecodeError:
            # Written by an incompatible version: better one more message than a crashed callback.
            logger.warning("send ledger entry unreadable")
            return None


class SendLedger(_Keys):
    """The record of a callback's sends, in Redis (sync).

    :param redis: a Redis client (the broker's connection pool will do).
    :param prefix: the key prefix (the webhook's ``<namespace>:<name>``).
    :param ttl: seconds an entry is kept after its last record (the webhook's ``dedupe_ttl``).
    """

    def __init__(self, redis: redis.Redis, *, prefix: str = "wa", ttl: float = 7 * 86400) -> None:
        super().__init__(prefix, ttl)
        self.redis = redis

    def lookup(self, unit_key: str, n: int) -> Recorded | None:
        """The n-th send recorded for the unit, or None."""
        return self.entry(self.redis.hget(self.key(unit_key), str(n)))

    def record(self, unit_key: str, n: int, entry: Recorded) -> None:
        """Record the n-th send of the unit (overwriting; the TTL restarts)."""
        key = self.key(unit_key)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, str(n), _encode(entry))
        pipe.pexpire(key, self.ttl_ms)
        pipe.execute()

    def forget(self, unit_key: str) -> None:
        """Drop every record of the unit."""
        self.redis.delete(self.key(unit_key))


class AsyncSendLedger(_Keys):
    """`SendLedger` on ``redis.asyncio`` (same keys, same entries)."""

    def __init__(self, redis: redis.asyncio.Redis, *, prefix: str = "wa", ttl: float = 7 * 86400) -> None:
        super().__init__(prefix, ttl)
        self.redis = redis

    async def lookup(self, unit_key: str, n: int) -> Recorded | None:
        return self.entry(await self.redis.hget(self.key(unit_key), str(n)))

    async def record(self, unit_key: str, n: int, entry: Recorded) -> None:
        key = self.key(unit_key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, str(n), _encode(entry))
            pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()

    async def forget(self, unit_key: str) -> None:
        await self.redis.delete(self.key(unit_key))


class Sender(Protocol):
    """What `Replies` sends through: a `Client`, or the testing kit's recorder."""

    def send(
        self,
        to: str,
        content: Content,
        *,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
        budget: float | None = None,
    ) -> SendResult: ...

    def mark_read(self, message_id: str, *, typing: bool = False, phone_number_id: str | None = None) -> None: ...


class AsyncSender(Protocol):
    """What `AsyncReplies` sends through: an `AsyncClient`, or a recorder."""

    async def send(
        self,
        to: str,
        content: Content,
        *,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
        budget: float | None = None,
    ) -> SendResult: ...

    async def mark_read(self, message_id: str, *, typing: bool = False, phone_number_id: str | None = None) -> None: ...


class _Run:
    """What both `Replies` classes share: the unit, the event's addresses and the send counter."""

    def __init__(
        self,
        unit_key: str,
        phone_number_id: str | None,
        to: str | None,
        message_id: str | None,
        *,
        resend: bool,
        deadline: float | None,
    ) -> None:
        self.unit_key = unit_key
        self.deadline = deadline
        self.phone_number_id = phone_number_id
        self.to = to
        self.message_id = message_id
        self.resend = resend
        self._counter = itertools.count(1)  # next() on a count is atomic: threads of one callback may share it
        #: Sends made (or replayed) by this run, in order.
        self.results: list[SendResult] = []

    def _prepare(
        self, content: Content | str, to: str | None, reply_to: str | None
    ) -> tuple[int, str, Content, str | None]:
        target = to or self.to
        if not target:
            raise ValueError("this event has no sender to reply to: pass to=")
        body = Text(body=content) if isinstance(content, str) else content
        return next(self._counter), target, body, reply_to

    def _budget(self) -> float | None:
        """What remains of the run's time limit, for the next send; raises when nothing does."""
        if self.deadline is None:
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            # Not sent: a send started now would be cut off mid-way, leaving no way to know whether it went out.
            raise TransportError("no time left in this callback run to send", maybe_sent=False)
        return remaining

    def _replayed(self, n: int, found: Recorded, digest: str) -> SendResult:
        if found.digest != digest:
            logger.warning(
                "recorded send differs from this one: the recorded one stands",
                extra={"unit": self.unit_key, "n": n},
            )
        result = msgspec.structs.replace(found.result, replayed=True)
        self.results.append(result)
        return result

    def _quote(self, quote: bool) -> str | None:
        if quote and not self.message_id:
            raise ValueError("this event has no message to quote")
        return self.message_id if quote else None

    def _reaction(self, emoji: str) -> Reaction:
        if not self.message_id:
            raise ValueError("this event has no message to react to")
        return Reaction(message_id=self.message_id, emoji=emoji)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(unit={self.unit_key!r}, phone_number_id={self.phone_number_id!r})"


class Replies(_Run):
    """The sends of one callback run, recorded in the ledger so a rerun does not send them again.

    The worker builds one per (event, callback) run::

        Replies(client, ledger, f"{event_key}|{callback.name}", ctx.phone_number_id, message.sender, message.id)

    :param sender: a `Client` (or the testing kit's recorder).
    :param ledger: the `SendLedger`; None sends without recording (no Redis: dev tools, tests).
    :param unit_key: names the unit: the worker passes ``"<event idempotency key>|<callback name>"``.
    :param phone_number_id: the business number the event arrived on: replies go out from it.
    :param to: the user who sent the event: replies go to them unless ``to=`` says otherwise.
    :param message_id: the event's message (what `react` reacts to, `mark_read` marks, ``quote`` quotes).
    :param resend: send even what the ledger has a record of, and record afresh (a dead-letter
        replay asked to answer again).
    :param deadline: a `time.monotonic` value the run must end by (its start plus the callback's
        time limit, less a margin): each send's retry budget is cut to what remains.
    """

    def __init__(
        self,
        sender: Sender,
        ledger: SendLedger | None,
        unit_key: str,
        phone_number_id: str | None,
        to: str | None,
        message_id: str | None = None,
        *,
        resend: bool = False,
        deadline: float | None = None,
    ) -> None:
        super().__init__(unit_key, phone_number_id, to, message_id, resend=resend, deadline=deadline)
        self.sender = sender
        self.ledger = ledger

    def send(self, content: Content | str, *, to: str | None = None, reply_to: str | None = None) -> SendResult:
        """Send ``content`` (a string is a text) as this run's next send, unless an earlier run of the
        unit already did: then its recorded result is returned (``replayed=True``)."""
        n, target, body, quoted = self._prepare(content, to, reply_to)
        digest = digest_of(target, body, quoted)
        if self.ledger is not None and not self.resend:
            # Raises when Redis is unreachable: never send without knowing whether it was sent.
            found = self.ledger.lookup(self.unit_key, n)
            if found is not None:
                return self._replayed(n, found, digest)
        result = self.sender.send(
            target, body, reply_to=quoted, phone_number_id=self.phone_number_id, budget=self._budget()
        )
        if self.ledger is not None:
            self._record(n, Recorded(result=result, digest=digest))
        self.results.append(result)
        return result

    def _record(self, n: int, entry: Recorded) -> None:
        assert self.ledger is not None
        for pause in _RECORD_TRIES:
            if pause:
                time.sleep(pause)
            try:
                self.ledger.record(self.unit_key, n, entry)
                return
            except Exception as exc:
                failure = exc
        logger.error(
            "send ledger record failed: a rerun of this callback would send again",
            extra={"unit": self.unit_key, "n": n, "error": type(failure).__name__},
        )

    def reply(self, content: Content | str, *, quote: bool = False) -> SendResult:
        """Answer the event's sender; ``quote=True`` shows the event's message quoted above."""
        return self.send(content, reply_to=self._quote(quote))

    def react(self, emoji: str) -> SendResult:
        """React to the event's message (``""`` removes the reaction)."""
        return self.send(self._reaction(emoji))

    def mark_read(self, *, typing: bool = False) -> None:
        """Mark the event's message read (blue ticks); ``typing=True`` also shows "typing..."."""
        if not self.message_id:
            raise ValueError("this event has no message to mark as read")
        self.sender.mark_read(self.message_id, typing=typing, phone_number_id=self.phone_number_id)


class AsyncReplies(_Run):
    """`Replies` for async callbacks, on an `AsyncSender` and an `AsyncSendLedger`."""

    def __init__(
        self,
        sender: AsyncSender,
        ledger: AsyncSendLedger | None,
        unit_key: str,
        phone_number_id: str | None,
        to: str | None,
        message_id: str | None = None,
        *,
        resend: bool = False,
        deadline: float | None = None,
    ) -> None:
        super().__init__(unit_key, phone_number_id, to, message_id, resend=resend, deadline=deadline)
        self.sender = sender
        self.ledger = ledger

    async def send(self, content: Content | str, *, to: str | None = None, reply_to: str | None = None) -> SendResult:
        n, target, body, quoted = self._prepare(content, to, reply_to)
        digest = digest_of(target, body, quoted)
        if self.ledger is not None and not self.resend:
            found = await self.ledger.lookup(self.unit_key, n)
            if found is not None:
                return self._replayed(n, found, digest)
        result = await self.sender.send(
            target, body, reply_to=quoted, phone_number_id=self.phone_number_id, budget=self._budget()
        )
        if self.ledger is not None:
            await self._record(n, Recorded(result=result, digest=digest))
        self.results.append(result)
        return result

    async def _record(self, n: int, entry: Recorded) -> None:
        assert self.ledger is not None
        for pause in _RECORD_TRIES:
            if pause:
                await asyncio.sleep(pause)
            try:
                await self.ledger.record(self.unit_key, n, entry)
                return
            except Exception as exc:
                failure = exc
        logger.error(
            "send ledger record failed: a rerun of this callback would send again",
            extra={"unit": self.unit_key, "n": n, "error": type(failure).__name__},
        )

    async def reply(self, content: Content | str, *, quote: bool = False) -> SendResult:
        return await self.send(content, reply_to=self._quote(quote))

    async def react(self, emoji: str) -> SendResult:
        return await self.send(self._reaction(emoji))

    async def mark_read(self, *, typing: bool = False) -> None:
        if not self.message_id:
            raise ValueError("this event has no message to mark as read")
        await self.sender.mark_read(self.message_id, typing=typing, phone_number_id=self.phone_number_id)
