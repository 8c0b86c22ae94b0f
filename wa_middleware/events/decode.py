"""Turn one raw delivery into its events, in the order they appear.

Both formats map to the same events: the Cloud API envelope
(``object/entry[]/changes[]/value``) and the older On-Premise flat body
(``{"contacts", "messages"}``, ``{"statuses"}``, ``{"errors"}``).

Decoding never fails on valid JSON. The worker decodes every delivery, so there are three paths,
each decoder built once:

- a delivery of ``messages`` changes (messages, statuses, value-level errors: nearly all
  traffic) is decoded into typed structs in one pass;
- a delivery of other fields is decoded in one untyped pass, as their values stay untyped;
- anything else (both kinds of field in one delivery, parts that do not fit the model) takes the
  general path: the envelope first, each change on its own, and when a part does not fit, the
  untyped JSON converted part by part. One odd message costs only itself: it is delivered as a
  `Change` of field ``"messages"`` carrying the part as it came, and the rest is still typed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec

from ..errors import PayloadError
from .models import (
    KNOWN_INTERACTIVE_TYPES,
    KNOWN_MESSAGE_TYPES,
    Change,
    Contact,
    Error,
    EventContext,
    Message,
    Metadata,
    Status,
)

__all__ = ["KNOWN_MESSAGE_TYPES", "Event", "EventKind", "decode_delivery", "raw_value"]

EventKind = Literal["message", "status", "error", "change"]

T = TypeVar("T")


class Event(NamedTuple):
    """One event of a delivery: ``kind`` says which type ``data`` is."""

    kind: EventKind
    data: Message | Status | Error | Change
    ctx: EventContext


class _Value(msgspec.Struct, gc=False):
    """``value`` of a ``messages`` change, and the On-Premise flat body."""

    metadata: Metadata | None = None
    contacts: list[Contact] | None = None
    messages: list[Message] | None = None
    statuses: list[Status] | None = None
    errors: list[Error] | None = None


_NULL = msgspec.Raw(b"null")

# Builds an Event without the Python-level __new__ of a NamedTuple: the worker makes one per event.
_event: Callable[[tuple[EventKind, Message | Status | Error | Change, EventContext]], Event] = functools.partial(
    tuple.__new__, Event
)


class _Change(msgspec.Struct, gc=False):
    field: str | None = None
    # Raw cannot sit in a union; an absent value reads as JSON null.
    value: msgspec.Raw = _NULL


class _Entry(msgspec.Struct, gc=False):
    id: str | int | None = None
    changes: list[_Change] | None = None


class _Delivery(msgspec.Struct, gc=False):
    object: str | None = None
    entry: list[_Entry] | None = None
    # The On-Premise flat body.
    contacts: list[Contact] | None = None
    messages: list[Message] | None = None
    statuses: list[Status] | None = None
    errors: list[Error] | None = None


class _FastChange(msgspec.Struct, gc=False):
    field: str | None = None
    value: _Value | None = None


class _FastEntry(msgspec.Struct, gc=False):
    id: str | int | None = None
    changes: list[_FastChange] | None = None


class _FastDelivery(msgspec.Struct, gc=False):
    """A delivery of ``messages`` changes only (nearly all traffic), typed in one pass."""

    object: str | None = None
    entry: list[_FastEntry] | None = None
    contacts: list[Contact] | None = None
    messages: list[Message] | None = None
    statuses: list[Status] | None = None
    errors: list[Error] | None = None


class _OtherChange(msgspec.Struct, gc=False):
    field: str | None = None
    value: Any = None


class _OtherEntry(msgspec.Struct, gc=False):
    id: str | int | None = None
    changes: list[_OtherChange] | None = None


class _OtherDelivery(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A delivery of changes of other fields: the envelope typed, the values left as JSON.

    Unknown top-level keys are refused here (the flat On-Premise keys among them), so that a body
    of another shape goes to the general path instead of losing them.
    """

    object: Any = None
    entry: list[_OtherEntry] | None = None


_fast_decoder = msgspec.json.Decoder(_FastDelivery)
_other_decoder = msgspec.json.Decoder(_OtherDelivery)
_delivery_decoder = msgspec.json.Decoder(_Delivery)
_value_decoder = msgspec.json.Decoder(_Value)
_any_decoder = msgspec.json.Decoder()
_FLAT_KEYS = ("contacts", "messages", "statuses", "errors")

# Where the untyped form of a value can be found again, when a part of it must be kept raw:
# the change's own bytes, or the body and the (entry, change) indexes of a one-pass decode.
_Source = msgspec.Raw | tuple[bytes, tuple[int, int] | None]


def decode_delivery(body: bytes, *, delivery_id: str | None = None, received_at: int | None = None) -> list[Event]:
    """Decode a delivery into its events, in the order they appear in it.

    :param body: the raw request body.
    :param delivery_id: the id of the delivery, copied into every event's context.
    :param received_at: when the delivery was stored (ms since the epoch), copied likewise.
    :raises PayloadError: only when ``body`` is not JSON at all (the web side never stores such a body).
    """
    events: list[Event] = []
    # Choose the path from the last change's field, which Meta writes after its value, so it is
    # found at once from the end. Messages, statuses and value-level errors all come as field
    # "messages"; the On-Premise body has no field. The choice only affects speed: each path
    # checks what it decodes and hands anything unexpected to the general path.
    last_field = body.rfind(b'"field"')
    if last_field >= 0 and body.find(b'"messages"', last_field, last_field + 32) < 0:
        # Other fields keep their values untyped: one pass types the envelope and leaves the values as JSON.
        try:
            other = _other_decoder.decode(body)
        except msgspec.ValidationError:
            return _general_events(body, delivery_id, received_at)
        except msgspec.DecodeError:
            raise PayloadError("the delivery is not valid JSON") from None
        if _other_events(events, other, delivery_id, received_at):
            return events
        return _general_events(body, delivery_id, received_at)
    # A delivery of "messages" changes only: decoded in one typed pass. Anything else (other
    # fields beside them, parts that do not fit the model) takes the general path below.
    try:
        fast = _fast_decoder.decode(body)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        raise PayloadError("the delivery is not valid JSON") from None
    else:
        if _fast_events(events, fast, body, delivery_id, received_at):
            return events
    return _general_events(body, delivery_id, received_at)


def _general_events(body: bytes, delivery_id: str | None, received_at: int | None) -> list[Event]:
    """Any delivery: the envelope first, then each change on its own, then part by part."""
    events: list[Event] = []
    try:
        delivery = _delivery_decoder.decode(body)
    except msgspec.ValidationError:
        return list(_loose_delivery(_decode_any(body), delivery_id, received_at))
    except msgspec.DecodeError:
        raise PayloadError("the delivery is not valid JSON") from None
    for entry in delivery.entry or ():
        waba_id = None if entry.id is None else str(entry.id)
        for change in entry.changes or ():
            if change.field == "messages":
                try:
                    decoded = _value_decoder.decode(change.value)
                except msgspec.ValidationError:
                    events.extend(_loose_value(_decode_any(change.value), waba_id, delivery_id, received_at))
                else:
                    _value_events(events, decoded, change.value, waba_id, delivery_id, received_at)
            else:
                ctx = EventContext(
                    waba_id=waba_id, field=change.field, delivery_id=delivery_id, received_at=received_at
                )
                events.append(Event("change", Change(field=change.field, value=_decode_any(change.value)), ctx))
    if delivery.messages or delivery.statuses or delivery.errors:
        flat = _Value(
            contacts=delivery.contacts, messages=delivery.messages, statuses=delivery.statuses, errors=delivery.errors
        )
        _value_events(events, flat, (body, None), None, delivery_id, received_at)
    elif delivery.entry is None and delivery.contacts is None:
        # Neither format: keep the body whole rather than drop it.
        ctx = EventContext(delivery_id=delivery_id, received_at=received_at)
        events.append(Event("change", Change(field=None, value=_decode_any(body)), ctx))
    return events


def _other_events(events: list[Event], other: _OtherDelivery, delivery_id: str | None, received_at: int | None) -> bool:
    """Append the changes of a delivery of other fields; False when it holds anything else."""
    if not other.entry:
        return False
    for entry in other.entry:
        waba_id = entry.id if type(entry.id) is str else None if entry.id is None else str(entry.id)
        for change in entry.changes or ():
            field = change.field
            if field == "messages":
                return False
            ctx = EventContext(waba_id=waba_id, field=field, delivery_id=delivery_id, received_at=received_at)
            events.append(_event(("change", Change(field=field, value=change.value), ctx)))
    return True


def _fast_events(
    events: list[Event], fast: _FastDelivery, body: bytes, delivery_id: str | None, received_at: int | None
) -> bool:
    """Append the events of a one-pass decode; False when it holds a change of another field."""
    if fast.entry is not None:
        for i, entry in enumerate(fast.entry):
            waba_id = entry.id if type(entry.id) is str else None if entry.id is None else str(entry.id)
            for j, change in enumerate(entry.changes or ()):
                if change.field != "messages" or change.value is None:
                    return False
                _value_events(events, change.value, (body, (i, j)), waba_id, delivery_id, received_at)
    if fast.messages or fast.statuses or fast.errors:
        flat = _Value(contacts=fast.contacts, messages=fast.messages, statuses=fast.statuses, errors=fast.errors)
        _value_events(events, flat, (body, None), None, delivery_id, received_at)
    elif fast.entry is None:
        return False
    return True


def raw_value(body: bytes) -> Any:
    """Untyped decode, for tools that show a delivery as it came."""
    return _decode_any(body)


def _decode_any(raw: bytes | msgspec.Raw) -> Any:
    try:
        return _any_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        # msgspec reports invalid UTF-8 inside a string as UnicodeDecodeError, not DecodeError.
        raise PayloadError("the delivery is not valid JSON") from None


def _untyped(source: _Source) -> Any:
    if isinstance(source, msgspec.Raw):
        return _decode_any(source)
    body, path = source
    value = _decode_any(body)
    if path is not None:
        value = value["entry"][path[0]]["changes"][path[1]]["value"]
    return value


def _value_events(
    events: list[Event],
    value: _Value,
    source: _Source,
    waba_id: str | None,
    delivery_id: str | None,
    received_at: int | None,
) -> None:
    # The hot loop of the worker: kept flat, one context per message built directly.
    metadata = value.metadata
    messages, statuses, errors = value.messages, value.statuses, value.errors
    if messages:
        contacts = value.contacts
        raws: list[Any] | None = None
        for message in messages:
            kind = message.type
            if kind not in KNOWN_MESSAGE_TYPES or (
                kind == "interactive"
                and (message.interactive is None or message.interactive.type not in KNOWN_INTERACTIVE_TYPES)
            ):
                if raws is None:  # rare: decode the source again, untyped, once for all such messages
                    raws = _untyped(source)["messages"]
                message = msgspec.structs.replace(message, raw=raws[messages.index(message)])
            if not contacts:
                contact = None
            elif len(contacts) == 1:
                contact = contacts[0]
            else:
                contact = _contact_for(message, contacts)
            ctx = EventContext(
                waba_id=waba_id,
                metadata=metadata,
                contact=contact,
                field="messages",
                delivery_id=delivery_id,
                received_at=received_at,
            )
            events.append(_event(("message", message, ctx)))
    if statuses or errors or not messages:
        base = EventContext(
            waba_id=waba_id, metadata=metadata, field="messages", delivery_id=delivery_id, received_at=received_at
        )
        for status in statuses or ():
            events.append(_event(("status", status, base)))
        for error in errors or ():
            events.append(_event(("error", error, base)))
        if not (messages or statuses or errors):
            # A messages change with nothing in it: a documentation example with fields at the wrong level.
            events.append(Event("change", Change(field="messages", value=_untyped(source)), base))


def _needs_raw(message: Message) -> bool:
    if message.type not in KNOWN_MESSAGE_TYPES:
        return True
    if message.type == "interactive":
        return message.interactive is None or message.interactive.type not in KNOWN_INTERACTIVE_TYPES
    return False


def _message_event(message: Message, contacts: list[Contact] | None, base: EventContext) -> Event:
    contact = _contact_for(message, contacts)
    ctx = base if contact is None else msgspec.structs.replace(base, contact=contact)
    return Event("message", message, ctx)


def _contact_for(message: Message, contacts: list[Contact] | None) -> Contact | None:
    if not contacts:
        return None
    for contact in contacts:
        if (message.from_ and contact.wa_id == message.from_) or (
            message.from_user_id and contact.user_id == message.from_user_id
        ):
            return contact
    return contacts[0] if len(contacts) == 1 else None


# -- the slow path: untyped JSON, converted part by part --------------------------------------


def _convert(obj: Any, cls: type[T]) -> T | None:
    try:
        return msgspec.convert(obj, cls)
    except msgspec.ValidationError:
        return None


def _converted_list(items: Any, cls: type[T]) -> Iterator[tuple[Any, T | None]]:
    if isinstance(items, list):
        for item in items:
            yield item, _convert(item, cls)
    elif items is not None:
        yield items, None


def _loose_delivery(obj: Any, delivery_id: str | None, received_at: int | None) -> Iterator[Event]:
    if not isinstance(obj, dict):
        yield Event("change", Change(value=obj), EventContext(delivery_id=delivery_id, received_at=received_at))
        return
    entries = obj.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            yield Event("change", Change(value=entry), EventContext(delivery_id=delivery_id, received_at=received_at))
            continue
        entry_id = entry.get("id")
        waba_id = str(entry_id) if isinstance(entry_id, (str, int)) and not isinstance(entry_id, bool) else None
        changes = entry.get("changes")
        for change in changes if isinstance(changes, list) else ():
            field = change.get("field") if isinstance(change, dict) else None
            field = field if isinstance(field, str) else None
            value = change.get("value") if isinstance(change, dict) else change
            if field == "messages":
                yield from _loose_value(value, waba_id, delivery_id, received_at)
            else:
                ctx = EventContext(waba_id=waba_id, field=field, delivery_id=delivery_id, received_at=received_at)
                yield Event("change", Change(field=field, value=value), ctx)
    if any(key in obj for key in _FLAT_KEYS):
        yield from _loose_value(obj, None, delivery_id, received_at)
    elif not isinstance(entries, list):
        yield Event("change", Change(value=obj), EventContext(delivery_id=delivery_id, received_at=received_at))


def _loose_value(value: Any, waba_id: str | None, delivery_id: str | None, received_at: int | None) -> Iterator[Event]:
    base = EventContext(waba_id=waba_id, field="messages", delivery_id=delivery_id, received_at=received_at)
    if not isinstance(value, dict):
        yield Event("change", Change(field="messages", value=value), base)
        return
    metadata = _convert(value.get("metadata"), Metadata)
    if metadata is not None:
        base = msgspec.structs.replace(base, metadata=metadata)
    contacts = [c for _, c in _converted_list(value.get("contacts"), Contact) if c is not None]
    found = False
    for raw, message in _converted_list(value.get("messages"), Message):
        found = True
        if message is None:
            yield Event("change", Change(field="messages", value=raw), base)
            continue
        if _needs_raw(message):
            message = msgspec.structs.replace(message, raw=raw)
        yield _message_event(message, contacts, base)
    for raw, status in _converted_list(value.get("statuses"), Status):
        found = True
        yield Event("status", status, base) if status is not None else Event("change", _part(raw), base)
    for raw, error in _converted_list(value.get("errors"), Error):
        found = True
        yield Event("error", error, base) if error is not None else Event("change", _part(raw), base)
    if not found:
        yield Event("change", Change(field="messages", value=value), base)


def _part(raw: Any) -> Change:
    return Change(field="messages", value=raw)
