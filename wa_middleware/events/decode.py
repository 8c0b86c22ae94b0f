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

A ``messages`` value with a key this version does not know takes the untyped route too, as only
there can a list beside ``messages`` (``calls``, ``message_echoes``...) be seen and delivered as a
`Change` of its own (`Change.list_name`) instead of being skipped with the unknown attributes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal, NamedTuple, TypeVar

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


_NULL = msgspec.Raw(b"null")


class _Value(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``value`` of a ``messages`` change, and the On-Premise flat body.

    Unknown keys are refused, so that a value holding a list beside ``messages`` that this
    version does not model goes to the untyped route, which delivers that list (any other new
    key goes there too, and costs only speed).
    """

    messaging_product: Any = None
    # Meta's summary of the conversation beside its messages (an object, not modelled): known, so
    # that a value carrying it keeps to the one-pass path; skipped like any unknown attribute.
    conversation_context: msgspec.Raw = _NULL
    metadata: Metadata | None = None
    contacts: list[Contact] | None = None
    messages: list[Message] | None = None
    statuses: list[Status] | None = None
    errors: list[Error] | None = None


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
    # Any: documentation examples put "<WEBHOOK_TIMESTAMP>" here, which must not fail the entry.
    time: Any = None
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
    time: Any = None
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
    time: Any = None
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
#: The keys of a ``messages`` value this version knows; a list under any other is delivered as a `Change`.
_VALUE_KEYS: Final = frozenset(_Value.__struct_fields__)
#: The lists of a value that become events of their own.
_EVENT_LISTS: Final = frozenset({"messages", "statuses", "errors"})
#: An ``entry[].time`` past this cannot be a time, nor be carried in MessagePack to the worker.
_MAX_TIME: Final = 2**63

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
        time = _entry_time(entry.time)
        for change in entry.changes or ():
            if change.field == "messages":
                try:
                    decoded = _value_decoder.decode(change.value)
                except msgspec.ValidationError:
                    events.extend(_loose_value(_decode_any(change.value), waba_id, time, delivery_id, received_at))
                else:
                    _value_events(events, decoded, change.value, waba_id, time, delivery_id, received_at)
            else:
                ctx = EventContext(
                    waba_id=waba_id,
                    field=change.field,
                    entry_time=time,
                    delivery_id=delivery_id,
                    received_at=received_at,
                )
                events.append(Event("change", Change(field=change.field, value=_decode_any(change.value)), ctx))
    if delivery.messages or delivery.statuses or delivery.errors:
        flat = _Value(
            contacts=delivery.contacts, messages=delivery.messages, statuses=delivery.statuses, errors=delivery.errors
        )
        _value_events(events, flat, (body, None), None, None, delivery_id, received_at)
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
        time = entry.time
        if time is not None and not (type(time) is int and 0 <= time < 2**63):  # inlined _entry_time
            time = _entry_time(time)
        for change in entry.changes or ():
            field = change.field
            if field == "messages":
                return False
            ctx = EventContext(
                waba_id=waba_id, field=field, entry_time=time, delivery_id=delivery_id, received_at=received_at
            )
            events.append(_event(("change", Change(field=field, value=change.value), ctx)))
    return True


def _fast_events(
    events: list[Event], fast: _FastDelivery, body: bytes, delivery_id: str | None, received_at: int | None
) -> bool:
    """Append the events of a one-pass decode; False when it holds a change of another field."""
    if fast.entry is not None:
        for i, entry in enumerate(fast.entry):
            waba_id = entry.id if type(entry.id) is str else None if entry.id is None else str(entry.id)
            time = entry.time
            if time is not None and not (type(time) is int and 0 <= time < 2**63):  # inlined _entry_time
                time = _entry_time(time)
            for j, change in enumerate(entry.changes or ()):
                if change.field != "messages" or change.value is None:
                    return False
                _value_events(events, change.value, (body, (i, j)), waba_id, time, delivery_id, received_at)
    if fast.messages or fast.statuses or fast.errors:
        flat = _Value(contacts=fast.contacts, messages=fast.messages, statuses=fast.statuses, errors=fast.errors)
        _value_events(events, flat, (body, None), None, None, delivery_id, received_at)
    elif fast.entry is None:
        return False
    return True


def _entry_time(value: Any) -> int | None:
    """``entry[].time`` as an integer: as sent, or from a string of digits; None for anything else."""
    if type(value) is int:
        return value if 0 <= value < _MAX_TIME else None
    if type(value) is str and value.isascii() and value.isdigit():
        return _entry_time(int(value))
    return None  # absent, or a placeholder such as "<WEBHOOK_TIMESTAMP>"


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
    entry_time: int | None,
    delivery_id: str | None,
    received_at: int | None,
) -> None:
    # The hot loop of the worker: kept flat, one context per message built directly.
    metadata = value.metadata
    contacts = value.contacts
    messages, statuses, errors = value.messages, value.statuses, value.errors
    if messages:
        raws: list[Any] | None = None
        for message in messages:
            kind = message.type
            if kind not in KNOWN_MESSAGE_TYPES or (
                kind == "interactive"
                and (message.interactive is None or message.interactive.type not in KNOWN_INTERACTIVE_TYPES)
            ):
                if raws is None:  # rare: decode the source again, untyped, once for all such messages
                    raws = _untyped(source)["messages"]
                # By identity, not equality: two messages can decode equal (same id, type, sender
                # and time) and differ only in what this version does not model, which raw is for.
                message = msgspec.structs.replace(message, raw=raws[_position(messages, message)])
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
                entry_time=entry_time,
                delivery_id=delivery_id,
                received_at=received_at,
            )
            events.append(_event(("message", message, ctx)))
    if statuses or errors or not messages:
        # Errors and kept parts name no user: they get the value's contact when it has only one,
        # and so share their context with the statuses whose recipient that contact is.
        single = contacts[0] if contacts and len(contacts) == 1 else None
        only = EventContext(
            waba_id=waba_id,
            metadata=metadata,
            contact=single,
            field="messages",
            entry_time=entry_time,
            delivery_id=delivery_id,
            received_at=received_at,
        )
        if not contacts:
            for status in statuses or ():
                events.append(_event(("status", status, only)))
        else:
            for status in statuses or ():
                # Most values have one contact, the recipient of all their statuses: checked first.
                if single is not None and (
                    (single.wa_id and single.wa_id == status.recipient_id)
                    or (single.user_id and single.user_id == status.recipient_user_id)
                ):
                    recipient: Contact | None = single
                else:
                    recipient = _recipient_contact(status, contacts)
                ctx = only if recipient is single else msgspec.structs.replace(only, contact=recipient)
                events.append(_event(("status", status, ctx)))
        for error in errors or ():
            events.append(_event(("error", error, only)))
        if not (messages or statuses or errors):
            # A messages change with nothing in it: a documentation example with fields at the wrong level.
            events.append(Event("change", Change(field="messages", value=_untyped(source)), only))


def _position(items: list[Message], item: Message) -> int:
    for i, candidate in enumerate(items):
        if candidate is item:
            return i
    raise ValueError("not in the list")  # never: the item is taken from the list


def _with_contact(base: EventContext, contact: Contact | None) -> EventContext:
    return base if contact is None else msgspec.structs.replace(base, contact=contact)


def _only_contact(contacts: list[Contact] | None) -> Contact | None:
    """The contact of an event that names no user (a value-level error, a kept part): the value's only one."""
    return contacts[0] if contacts and len(contacts) == 1 else None


def _recipient_contact(status: Status, contacts: list[Contact]) -> Contact | None:
    """The contact of a status's recipient: the one whose ``wa_id`` or ``user_id`` is the
    recipient's (in a group, the participant's); else the value's only contact, but only when
    the two give no ids to compare, so that a contact of another user is never taken."""
    phones = (status.recipient_id, status.recipient_participant_id, status.participant_recipient_id)
    users = (status.recipient_user_id, status.recipient_participant_user_id)
    for contact in contacts:
        wa_id = contact.wa_id
        if wa_id and wa_id in phones:
            return contact
        user_id = contact.user_id
        if user_id and user_id in users:
            return contact
    if len(contacts) != 1:
        return None
    only = contacts[0]
    if (only.wa_id and any(phones)) or (only.user_id and any(users)):
        return None  # both sides name the user, and differently
    return only


def _needs_raw(message: Message) -> bool:
    if message.type not in KNOWN_MESSAGE_TYPES:
        return True
    if message.type == "interactive":
        return message.interactive is None or message.interactive.type not in KNOWN_INTERACTIVE_TYPES
    return False


def _message_event(message: Message, contacts: list[Contact] | None, base: EventContext) -> Event:
    return Event("message", message, _with_contact(base, _contact_for(message, contacts)))


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
        time = _entry_time(entry.get("time"))
        changes = entry.get("changes")
        for change in changes if isinstance(changes, list) else ():
            field = change.get("field") if isinstance(change, dict) else None
            field = field if isinstance(field, str) else None
            value = change.get("value") if isinstance(change, dict) else change
            if field == "messages":
                yield from _loose_value(value, waba_id, time, delivery_id, received_at)
            else:
                ctx = EventContext(
                    waba_id=waba_id, field=field, entry_time=time, delivery_id=delivery_id, received_at=received_at
                )
                yield Event("change", Change(field=field, value=value), ctx)
    if any(key in obj for key in _FLAT_KEYS):
        yield from _loose_value(obj, None, None, delivery_id, received_at, flat=True)
    elif not isinstance(entries, list):
        yield Event("change", Change(value=obj), EventContext(delivery_id=delivery_id, received_at=received_at))


def _loose_value(
    value: Any,
    waba_id: str | None,
    entry_time: int | None,
    delivery_id: str | None,
    received_at: int | None,
    *,
    flat: bool = False,
) -> Iterator[Event]:
    """The events of a ``messages`` value (or, with ``flat``, of an On-Premise body) as untyped JSON.

    Besides the parts that fit, it delivers what the typed route cannot: each part that does not
    fit, kept whole, and each list this version does not model beside ``messages`` (not looked
    for in an On-Premise body, whose top level also holds the envelope's keys when both come).
    """
    base = EventContext(
        waba_id=waba_id, field="messages", entry_time=entry_time, delivery_id=delivery_id, received_at=received_at
    )
    if not isinstance(value, dict):
        yield Event("change", Change(field="messages", value=value), base)
        return
    metadata = _convert(value.get("metadata"), Metadata)
    if metadata is not None:
        base = msgspec.structs.replace(base, metadata=metadata)
    contacts = [c for _, c in _converted_list(value.get("contacts"), Contact) if c is not None]
    only = _with_contact(base, _only_contact(contacts))
    found = False
    for raw, message in _converted_list(value.get("messages"), Message):
        found = True
        if message is None:
            message = _with_numbers(raw)
        if message is None:
            yield Event("change", Change(field="messages", value=raw), only)
            continue
        if _needs_raw(message):
            message = msgspec.structs.replace(message, raw=raw)
        yield _message_event(message, contacts, base)
    for raw, status in _converted_list(value.get("statuses"), Status):
        found = True
        if status is None:
            yield Event("change", _part(raw), only)
        else:
            yield Event(
                "status", status, _with_contact(base, _recipient_contact(status, contacts) if contacts else None)
            )
    for raw, error in _converted_list(value.get("errors"), Error):
        found = True
        yield Event("error", error, only) if error is not None else Event("change", _part(raw), only)
    if not flat:
        unknown = [key for key, item in value.items() if key not in _VALUE_KEYS and isinstance(item, list)]
        for name in unknown:
            found = True
            # The value as sent, less the lists delivered as other events: metadata and contacts stay.
            part = {
                key: item
                for key, item in value.items()
                if key == name or (key not in _EVENT_LISTS and (key in _VALUE_KEYS or not isinstance(item, list)))
            }
            yield Event("change", Change(field="messages", value=part, list_name=name), only)
    if not found:
        yield Event("change", Change(field="messages", value=value), only)


def _part(raw: Any) -> Change:
    return Change(field="messages", value=raw)


# -- numbers sent as strings ------------------------------------------------------------------

# Meta documents numbers for these attributes; some gateways re-serialise them as strings
# ("quantity": "1"). Such a message does not fit the typed model, and would reach only the
# `Change` fallback, so here, on the slow path it takes anyway, a string holding a JSON number is
# read as that number. Any other string (a placeholder such as "LOCATION_LATITUDE") still does
# not fit, and the message is kept whole as a `Change` as before. Only these attributes: a string
# elsewhere is a change of meaning this version cannot judge.
_LOCATION_NUMBERS: Final[Mapping[str, type[float]]] = {"latitude": float, "longitude": float}
_ITEM_NUMBERS: Final[Mapping[str, type[float]]] = {"quantity": int, "item_price": float}
_DIGITS: Final = frozenset("0123456789")
_NUMBER_STARTS: Final = _DIGITS | {"-"}


def _with_numbers(raw: Any) -> Message | None:
    """The message ``raw`` once its numbers sent as strings are numbers; None if it still does not fit."""
    fixed = _numbers_in_message(raw)
    return None if fixed is None else _convert(fixed, Message)


def _numbers_in_message(raw: Any) -> dict[str, Any] | None:
    """A copy of the message ``raw`` with its numeric strings as numbers; None when it has none."""
    if not isinstance(raw, dict):
        return None
    fixed: dict[str, Any] = {}
    location = raw.get("location")
    if isinstance(location, dict) and (numbers := _numbers(location, _LOCATION_NUMBERS)) is not None:
        fixed["location"] = numbers
    order = raw.get("order")
    items = order.get("product_items") if isinstance(order, dict) else None
    if isinstance(order, dict) and isinstance(items, list):
        new_items = [(_numbers(item, _ITEM_NUMBERS) if isinstance(item, dict) else None) for item in items]
        if any(item is not None for item in new_items):
            fixed["order"] = {
                **order,
                "product_items": [new if new is not None else old for new, old in zip(new_items, items, strict=True)],
            }
    edit = raw.get("edit")
    if isinstance(edit, dict) and (message := _numbers_in_message(edit.get("message"))) is not None:
        fixed["edit"] = {**edit, "message": message}
    return {**raw, **fixed} if fixed else None


def _numbers(obj: dict[str, Any], types: Mapping[str, type[float]]) -> dict[str, Any] | None:
    out: dict[str, Any] | None = None
    for key, cls in types.items():
        value = obj.get(key)
        if not isinstance(value, str) or value[:1] not in _NUMBER_STARTS or value[-1:] not in _DIGITS:
            continue  # not a string, or a placeholder: spare the exception (and refuse blanks around)
        try:
            number = msgspec.json.decode(value, type=cls)
        except msgspec.DecodeError:  # not a JSON number of that type (JSON has no NaN; 1e999 is refused)
            continue
        if out is None:
            out = dict(obj)
        out[key] = number
    return out
