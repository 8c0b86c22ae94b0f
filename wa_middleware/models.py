"""Typed events, named as in WhatsApp's JSON (``from`` becomes ``from_``).

Every struct is frozen, keyword-only, skips unknown fields and omits unset ones when encoded,
so ``msgspec.to_builtins(event)`` gives back the familiar JSON shape. Types not known today are
not errors: a message of an unknown ``type`` keeps its whole payload in ``raw``, an unknown
``field`` arrives as a `Change` carrying its raw ``value``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec

__all__ = [
    "Button",
    "Change",
    "Contact",
    "Context",
    "Error",
    "ErrorData",
    "EventContext",
    "Interactive",
    "InteractiveReply",
    "Location",
    "Media",
    "Message",
    "Metadata",
    "Profile",
    "Reaction",
    "Status",
    "Text",
]


class _Base(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    pass


def _to_datetime(value: str | int | None) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return datetime.fromtimestamp(int(value), tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


class Metadata(_Base):
    """The business phone number that received the notification."""

    display_phone_number: str | None = None
    phone_number_id: str | None = None


class Profile(_Base):
    name: str | None = None
    username: str | None = None


class Contact(_Base):
    """The user a message came from (``value.contacts[]``)."""

    wa_id: str | None = None
    profile: Profile | None = None
    user_id: str | None = None
    parent_user_id: str | None = None

    @property
    def name(self) -> str | None:
        return self.profile.name if self.profile else None


class ErrorData(_Base):
    details: str | None = None


class Error(_Base):
    """An error, in the older ``{code, title, details}`` or the newer ``{code, title, message,
    error_data: {details}, href}`` shape."""

    code: int | None = None
    title: str | None = None
    message: str | None = None
    details: str | None = None
    error_data: ErrorData | None = None
    href: str | None = None

    @property
    def detail(self) -> str | None:
        """The details, wherever this shape of error keeps them."""
        if self.error_data is not None and self.error_data.details:
            return self.error_data.details
        return self.details or self.message


class Text(_Base):
    body: str = ""


class Media(_Base):
    """Image, audio, video, document or sticker."""

    id: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool | None = None
    animated: bool | None = None
    url: str | None = None
    link: str | None = None


class Location(_Base):
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    address: str | None = None
    url: str | None = None


class Reaction(_Base):
    message_id: str | None = None
    emoji: str | None = None


class Button(_Base):
    """A template quick-reply button press (``type: "button"``)."""

    text: str | None = None
    payload: str | None = None


class InteractiveReply(_Base):
    id: str | None = None
    title: str | None = None
    description: str | None = None


class Interactive(_Base):
    type: str | None = None
    button_reply: InteractiveReply | None = None
    list_reply: InteractiveReply | None = None
    nfm_reply: dict[str, Any] | None = None


class Context(_Base):
    """Set when a message replies to, or forwards, another one."""

    from_: str | None = msgspec.field(default=None, name="from")
    id: str | None = None
    forwarded: bool | None = None
    frequently_forwarded: bool | None = None
    referred_product: dict[str, Any] | None = None


class Message(_Base):
    """An incoming message (``value.messages[]``). ``type`` says which attribute holds its content."""

    id: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    timestamp: str | int | None = None
    type: str | None = None
    context: Context | None = None
    text: Text | None = None
    image: Media | None = None
    audio: Media | None = None
    video: Media | None = None
    document: Media | None = None
    sticker: Media | None = None
    voice: Media | None = None
    location: Location | None = None
    contacts: list[dict[str, Any]] | None = None
    interactive: Interactive | None = None
    button: Button | None = None
    reaction: Reaction | None = None
    order: dict[str, Any] | None = None
    system: dict[str, Any] | None = None
    referral: dict[str, Any] | None = None
    errors: list[Error] | None = None
    from_user_id: str | None = None
    from_parent_user_id: str | None = None
    group_id: str | None = None
    #: The whole message as JSON builtins, set only for a ``type`` this version does not model.
    raw: dict[str, Any] | None = None

    @property
    def datetime(self) -> datetime | None:
        """``timestamp`` as an aware UTC datetime."""
        return _to_datetime(self.timestamp)

    @property
    def sender(self) -> str | None:
        """The sender's phone number, or the business-scoped user id when there is none."""
        return self.from_ or self.from_user_id

    @property
    def media(self) -> Media | None:
        """The media object whatever the media type."""
        return self.image or self.audio or self.video or self.document or self.sticker or self.voice


class Status(_Base):
    """A status update of a message the business sent (``value.statuses[]``)."""

    id: str | None = None
    status: str | None = None
    timestamp: str | int | None = None
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    conversation: dict[str, Any] | None = None
    pricing: dict[str, Any] | None = None
    errors: list[Error] | None = None
    biz_opaque_callback_data: str | None = None

    @property
    def datetime(self) -> datetime | None:
        return _to_datetime(self.timestamp)


class Change(_Base):
    """A change of a ``field`` other than ``messages`` (template, account, quality updates...)."""

    field: str | None = None
    value: Any = None


class EventContext(_Base):
    """Where an event came from: passed as a second argument to callbacks that take one.

    :ivar waba_id: the WhatsApp Business Account id (``entry[].id``).
    :ivar metadata: the receiving business number.
    :ivar contact: for messages, the sender's contact (profile name, wa_id).
    :ivar field: the change's ``field`` (``"messages"`` for messages, statuses and errors).
    :ivar delivery_id: the id of the webhook delivery (one HTTP request) the event came in.
    :ivar received_at: when the delivery was stored, in milliseconds since the epoch.
    """

    waba_id: str | None = None
    metadata: Metadata | None = None
    contact: Contact | None = None
    field: str | None = None
    delivery_id: str | None = None
    received_at: int | None = None

    @property
    def phone_number_id(self) -> str | None:
        return self.metadata.phone_number_id if self.metadata else None
