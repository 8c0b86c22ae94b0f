"""A sender that records instead of sending: what a test asserts a bot answered.

`Outbox` and `AsyncOutbox` have the ``send`` and ``mark_read`` of `Client` and `AsyncClient`
(the `Sender` protocols `Replies` needs), keep every call in `Outbox.sent`, and answer with made-up
wamids, so a callback runs exactly as in production, ledger included, with nothing on the network.
"""

from __future__ import annotations

import itertools
import threading

import msgspec

from .types import Content, SendResult, Text

__all__ = ["AsyncOutbox", "Outbox", "Read", "Sent"]


class Sent(msgspec.Struct, kw_only=True, frozen=True):
    """One recorded send.

    :ivar message_id: the made-up wamid it was answered with.
    """

    to: str
    content: Content
    reply_to: str | None = None
    phone_number_id: str | None = None
    message_id: str

    @property
    def text(self) -> str | None:
        """The body of a text message (None for other kinds)."""
        return self.content.body if isinstance(self.content, Text) else None


class Read(msgspec.Struct, kw_only=True, frozen=True):
    """One recorded mark-as-read."""

    message_id: str
    typing: bool = False
    phone_number_id: str | None = None


class _Recording:
    def __init__(self) -> None:
        #: Every send and mark-as-read, in order.
        self.calls: list[Sent | Read] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def sent(self) -> list[Sent]:
        """The sends, in order."""
        return [call for call in self.calls if isinstance(call, Sent)]

    @property
    def texts(self) -> list[str]:
        """The bodies of the text messages sent, in order: the usual assertion."""
        return [call.text for call in self.sent if call.text is not None]

    @property
    def reads(self) -> list[Read]:
        return [call for call in self.calls if isinstance(call, Read)]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def _send(self, to: str, content: Content, reply_to: str | None, phone_number_id: str | None) -> SendResult:
        with self._lock:
            message_id = f"wamid.OUTBOX{next(self._ids)}"
            self.calls.append(
                Sent(to=to, content=content, reply_to=reply_to, phone_number_id=phone_number_id, message_id=message_id)
            )
        return SendResult(message_id=message_id, wa_id=to, message_status="accepted")

    def _read(self, message_id: str, typing: bool, phone_number_id: str | None) -> None:
        with self._lock:
            self.calls.append(Read(message_id=message_id, typing=typing, phone_number_id=phone_number_id))


class Outbox(_Recording):
    """Records sends (a sync `Sender`)."""

    def send(
        self,
        to: str,
        content: Content,
        *,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
        budget: float | None = None,
    ) -> SendResult:
        return self._send(to, content, reply_to, phone_number_id)

    def mark_read(self, message_id: str, *, typing: bool = False, phone_number_id: str | None = None) -> None:
        self._read(message_id, typing, phone_number_id)


class AsyncOutbox(_Recording):
    """Records sends (an `AsyncSender`)."""

    async def send(
        self,
        to: str,
        content: Content,
        *,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
        budget: float | None = None,
    ) -> SendResult:
        return self._send(to, content, reply_to, phone_number_id)

    async def mark_read(self, message_id: str, *, typing: bool = False, phone_number_id: str | None = None) -> None:
        self._read(message_id, typing, phone_number_id)
