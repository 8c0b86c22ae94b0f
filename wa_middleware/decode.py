"""Turn one raw delivery into its events, in the order they appear.

Both formats map to the same events: the Cloud API envelope
(``object/entry[]/changes[]/value``) and the older On-Premise flat body
(``{"contacts", "messages"}``, ``{"statuses"}``, ``{"errors"}``). Decoding never fails on
valid JSON: a part that does not fit the model is delivered as a `Change` with its raw value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import msgspec

from .models import Change, Contact, Error, EventContext, Message, Metadata, Status

__all__ = ["KNOWN_MESSAGE_TYPES", "Event", "EventKind", "decode_delivery"]

EventKind = Literal["message", "status", "error", "change"]

#: Message types this version models; any other keeps its payload in `Message.raw`.
KNOWN_MESSAGE_TYPES = frozenset(
    {
        "text", "image", "audio", "video", "document", "sticker", "voice", "location", "contacts",
        "interactive", "button", "reaction", "order", "system", "unknown", "unsupported",
    }
)  # fmt: skip


class Event(NamedTuple):
    kind: EventKind
    data: Message | Status | Error | Change
    ctx: EventContext


class _Value(msgspec.Struct):
    metadata: Metadata | None = None
    contacts: list[Contact] | None = None
    messages: list[msgspec.Raw] | None = None
    statuses: list[Status] | None = None
    errors: list[Error] | None = None


_NULL = msgspec.Raw(b"null")


class _Change(msgspec.Struct):
    field: str | None = None
    # Raw cannot sit in a union; an absent value reads as JSON null.
    value: msgspec.Raw = _NULL


class _Entry(msgspec.Struct):
    id: str | int | None = None
    changes: list[_Change] | None = None


class _Delivery(msgspec.Struct):
    object: str | None = None
    entry: list[_Entry] | None = None
    # The On-Premise flat body.
    contacts: list[Contact] | None = None
    messages: list[msgspec.Raw] | None = None
    statuses: list[Status] | None = None
    errors: list[Error] | None = None


_delivery_decoder = msgspec.json.Decoder(_Delivery)
_value_decoder = msgspec.json.Decoder(_Value)
_message_decoder = msgspec.json.Decoder(Message)
_any_decoder = msgspec.json.Decoder()


def decode_delivery(body: bytes, *, delivery_id: str | None = None, received_at: int | None = None) -> list[Event]:
    """Decode a delivery into its events.

    :raises msgspec.DecodeError: only when ``body`` is not JSON at all (the web side rejects that with a 400).
    """
    try:
        delivery = _delivery_decoder.decode(body)
    except msgspec.ValidationError:
        # Valid JSON of an unexpected shape: keep it whole rather than drop it.
        base = EventContext(delivery_id=delivery_id, received_at=received_at)
        return [Event("change", Change(field=None, value=_any_decoder.decode(body)), base)]
    return list(_events(delivery, delivery_id, received_at))


def _events(delivery: _Delivery, delivery_id: str | None, received_at: int | None) -> Iterator[Event]:
    for entry in delivery.entry or ():
        waba_id = None if entry.id is None else str(entry.id)
        for change in entry.changes or ():
            base = EventContext(waba_id=waba_id, field=change.field, delivery_id=delivery_id, received_at=received_at)
            if change.field == "messages":
                try:
                    value = _value_decoder.decode(change.value)
                except msgspec.ValidationError:
                    pass
                else:
                    found = False
                    for event in _value_events(value, base):
                        found = True
                        yield event
                    if found:
                        continue
            yield Event("change", Change(field=change.field, value=_any_decoder.decode(change.value)), base)
    if delivery.messages or delivery.statuses or delivery.errors:
        flat = _Value(
            contacts=delivery.contacts, messages=delivery.messages, statuses=delivery.statuses, errors=delivery.errors
        )
        yield from _value_events(flat, EventContext(field="messages", delivery_id=delivery_id, received_at=received_at))


def _value_events(value: _Value, base: EventContext) -> Iterator[Event]:
    if value.metadata is not None:
        base = msgspec.structs.replace(base, metadata=value.metadata)
    for raw in value.messages or ():
        try:
            message = _message_decoder.decode(raw)
        except msgspec.ValidationError:
            yield Event("change", Change(field=base.field, value=_any_decoder.decode(raw)), base)
            continue
        if message.type not in KNOWN_MESSAGE_TYPES:
            message = msgspec.structs.replace(message, raw=_any_decoder.decode(raw))
        contact = _contact_for(message, value.contacts)
        ctx = msgspec.structs.replace(base, contact=contact) if contact is not None else base
        yield Event("message", message, ctx)
    for status in value.statuses or ():
        yield Event("status", status, base)
    for error in value.errors or ():
        yield Event("error", error, base)


def _contact_for(message: Message, contacts: list[Contact] | None) -> Contact | None:
    if not contacts:
        return None
    for contact in contacts:
        if (message.from_ and contact.wa_id == message.from_) or (
            message.from_user_id and contact.user_id == message.from_user_id
        ):
            return contact
    return contacts[0] if len(contacts) == 1 else None


def raw_value(body: bytes) -> Any:
    """Untyped decode, for tools that show a delivery as it came."""
    return _any_decoder.decode(body)
