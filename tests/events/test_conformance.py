"""Conformance of what the decoder puts beside each event (issue 16), over deliveries written from
Meta's documented format (``tests/payloads/model/``) and small bodies built here:

- ``entry[].time`` on the context of every event of its entry;
- the matching contact on the context of statuses and errors;
- lists beside ``messages`` that this version does not model, delivered as changes;
- the raw payload of an unmodelled message taken by position, not by equality;
- numbers that a gateway re-serialised as strings;

and that the context, with all of it, crosses the worker's MessagePack boundary unchanged.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from tests.conftest import PAYLOADS, SHARED_PAYLOADS
from wa_middleware import Change, Error, EventContext, Message, NoAuth, Status, Webhook, testing
from wa_middleware.events.decode import Event, _general_events, decode_delivery
from wa_middleware.events.identity import event_key

MODEL = PAYLOADS / "model"


def decode(name: str) -> list[Event]:
    return decode_delivery((MODEL / name).read_bytes(), delivery_id="d-16", received_at=1700000000000)


def selector(event: Event) -> str:
    data: Any = event.data
    if event.kind == "message":
        return f"message:{data.type}" + ("+raw" if data.raw is not None else "")
    if event.kind == "status":
        return f"status:{data.status}"
    if event.kind == "error":
        return f"error:{data.code}"
    return f"change:{data.field}" + (f"[{data.list_name}]" if data.list_name else "")


def body(*changes: tuple[str, Any], time: Any = None, **entry: Any) -> bytes:
    """A Cloud API envelope of one entry; ``time`` is left out when None."""
    one: dict[str, Any] = {"id": "200000000000099", **entry}
    if time is not None:
        one["time"] = time
    one["changes"] = [{"value": value, "field": field} for field, value in changes]
    return msgspec.json.encode({"object": "whatsapp_business_account", "entry": [one]})


METADATA = {"display_phone_number": "15550000099", "phone_number_id": "100000000000099"}
TEXT = {"from": "4915112345678", "id": "wamid.T", "timestamp": "1700000000", "type": "text", "text": {"body": "x"}}
ODD = {"from": "4915112345678", "id": "wamid.O", "type": "location", "location": {"latitude": "north"}}


@pytest.mark.parametrize(
    "name,expected",
    [
        pytest.param(
            "entry_time.json",
            [
                "message:text",
                "status:read",
                "change:message_template_status_update",
                "change:message_template_quality_update",
                "change:phone_number_quality_update",
                "change:account_update",
                "change:account_review_update",
            ],
            id="entry-time",
        ),
        pytest.param(
            "statuses_with_contacts.json",
            [
                *("status:delivered", "status:read", "status:sent", "status:sent", "status:delivered"),
                *("status:read", "status:failed", "error:131000"),
            ],
            id="statuses-with-contacts",
        ),
        pytest.param(
            "unknown_lists.json",
            [
                "message:text",
                "change:messages[calls]",
                "change:messages[message_echoes]",
                "status:sent",
                "change:messages[user_changes]",
            ],
            id="unknown-lists",
        ),
        pytest.param(
            "unmodelled_twins.json",
            ["message:poll_vote+raw"] * 2 + ["message:interactive+raw"] * 2,
            id="unmodelled-twins",
        ),
        pytest.param(
            "numbers_as_strings.json",
            ["message:order", "message:location", "change:messages", "change:messages", "message:text"],
            id="numbers-as-strings",
        ),
    ],
)
def test_events_in_order(name: str, expected: list[str]) -> None:
    events = decode(name)
    assert [selector(e) for e in events] == expected
    assert all(e.ctx.delivery_id == "d-16" and e.ctx.received_at == 1700000000000 for e in events)


# -- entry[].time ------------------------------------------------------------------------------


def test_entry_time_on_every_event_of_its_entry() -> None:
    events = decode("entry_time.json")
    assert [e.ctx.entry_time for e in events] == [
        *(1700001000, 1700001000, 1700001100, 1700001200, 1700001200),
        None,  # "<WEBHOOK_TIMESTAMP>": a documentation placeholder
        None,  # no time at all
    ]
    assert events[2].ctx.entry_datetime == dt.datetime(2023, 11, 14, 22, 31, 40, tzinfo=dt.timezone.utc)
    assert events[5].ctx.entry_datetime is None and events[5].ctx.waba_id == "200000000000011"


@pytest.mark.parametrize(
    "delivery",
    [
        pytest.param(body(("messages", {"metadata": METADATA, "messages": [TEXT]}), time=1700000500), id="messages"),
        pytest.param(body(("account_review_update", {"decision": "APPROVED"}), time=1700000500), id="other-fields"),
        pytest.param(
            body(("messages", {"messages": [TEXT]}), ("account_update", {"event": "X"}), time=1700000500),
            id="mixed-fields",
        ),
        pytest.param(body(("messages", {"messages": [TEXT, ODD]}), time=1700000500), id="odd-part"),
        pytest.param(body(("messages", {"messages": [TEXT]}), time="1700000500"), id="string-of-digits"),
        pytest.param(body(("messages", {"messages": [TEXT]}), time=1700000500, id=[1]), id="odd-envelope"),
    ],
)
def test_entry_time_on_every_path(delivery: bytes) -> None:
    events = decode_delivery(delivery)
    assert events and all(e.ctx.entry_time == 1700000500 for e in events)
    assert events == _general_events(delivery, None, None)


@pytest.mark.parametrize(
    "time", [pytest.param(2**64, id="too-big"), pytest.param(-5, id="negative"), pytest.param(1.5, id="float")]
)
def test_entry_time_that_is_no_time(time: Any) -> None:
    (event,) = decode_delivery(body(("messages", {"messages": [TEXT]}), time=time))
    assert event.kind == "message" and event.ctx.entry_time is None
    msgspec.msgpack.encode(event.ctx)  # what the worker does with it


def test_on_premise_body_has_no_entry_time() -> None:
    (event,) = decode_delivery(msgspec.json.encode({"messages": [TEXT]}))
    assert event.ctx.entry_time is None and event.ctx.entry_datetime is None


# -- contacts beside statuses and errors -------------------------------------------------------


def test_statuses_and_errors_get_the_matching_contact() -> None:
    events = decode("statuses_with_contacts.json")
    names = [e.ctx.sender_name for e in events]
    assert names == [
        "Pablo M.",  # matched by recipient_id (and recipient_user_id)
        "Carla",  # empty recipient_id, matched by recipient_user_id among two contacts
        "Dan",  # matched by recipient_id among two contacts
        None,  # a recipient among none of the contacts
        None,  # the only contact, but of another user
        "Pablo M.",  # a group status: matched by its participant
        "Fay",  # the only contact; it has no wa_id to compare with recipient_id
        "Fay",  # a value-level error: the value's only contact
    ]
    first = events[0].ctx.contact
    assert first is not None and first.profile is not None
    assert (first.profile.username, first.user_id) == ("@pablomorales", "US.13491208655302741918")


def test_error_among_several_contacts_gets_none() -> None:
    contacts = [{"wa_id": "1", "profile": {"name": "One"}}, {"wa_id": "2", "profile": {"name": "Two"}}]
    (event,) = decode_delivery(body(("messages", {"contacts": contacts, "errors": [{"code": 131000}]})))
    assert event.kind == "error" and event.ctx.contact is None


def test_contacts_matched_alike_on_the_slow_path() -> None:
    """A part that does not fit sends the value to the untyped path: the contacts still match."""
    value = msgspec.json.decode((MODEL / "statuses_with_contacts.json").read_bytes())["entry"][0]["changes"][1]["value"]
    value["statuses"].append({"id": 7})  # an id that is not a string: this status does not fit
    events = decode_delivery(body(("messages", value)))
    assert [selector(e) for e in events] == ["status:read", "status:sent", "status:sent", "change:messages"]
    assert [e.ctx.sender_name for e in events] == ["Carla", "Dan", None, None]


def test_the_contact_does_not_enter_the_idempotency_key() -> None:
    status = {"id": "wamid.K", "status": "read", "recipient_id": "1"}
    error = {"code": 131000, "title": "x"}
    bare = decode_delivery(body(("messages", {"metadata": METADATA, "statuses": [status], "errors": [error]})))
    with_contact = decode_delivery(
        body(
            ("messages", {"metadata": METADATA, "contacts": [{"wa_id": "1"}], "statuses": [status], "errors": [error]})
        )
    )
    assert [e.ctx.contact for e in bare] == [None, None]
    assert all(e.ctx.contact is not None for e in with_contact)
    assert [event_key(e) for e in bare] == [event_key(e) for e in with_contact]


# -- lists beside messages ---------------------------------------------------------------------


def test_unknown_lists_become_changes_of_their_own() -> None:
    _, calls, echoes, _, user_changes = decode("unknown_lists.json")
    assert isinstance(calls.data, Change) and isinstance(echoes.data, Change) and isinstance(user_changes.data, Change)
    assert calls.data.value["calls"][0]["id"] == "wacid.CALL1"
    # The value as sent, less the lists delivered as other events; metadata and contacts stay.
    assert set(calls.data.value) == {"messaging_product", "metadata", "contacts", "calls", "brand_new_flag"}
    assert set(echoes.data.value) == {"messaging_product", "metadata", "contacts", "message_echoes", "brand_new_flag"}
    assert set(user_changes.data.value) == {"messaging_product", "metadata", "user_changes"}
    assert calls.data.typed is None
    assert (calls.ctx.field, calls.ctx.phone_number_id, calls.ctx.sender_name, calls.ctx.entry_time) == (
        "messages",
        "100000000000018",
        "Ana Example",
        1700002000,
    )
    assert user_changes.ctx.contact is None
    assert len({event_key(e) for e in (calls, echoes, user_changes)}) == 3


@pytest.mark.parametrize(
    "value,expected",
    [
        pytest.param({"metadata": METADATA, "calls": [{"id": "c"}]}, ["change:messages[calls]"], id="only-a-list"),
        pytest.param(
            {"messages": [TEXT, ODD], "calls": [{"id": "c"}]},
            ["message:text", "change:messages", "change:messages[calls]"],
            id="beside-an-odd-part",
        ),
        pytest.param({"messages": [TEXT], "flag": True, "note": {"a": 1}}, ["message:text"], id="not-lists"),
        pytest.param({"messages": [TEXT], "calls": []}, ["message:text", "change:messages[calls]"], id="empty-list"),
        pytest.param(
            {"messages": [TEXT], "conversation_context": {"type": "summary"}}, ["message:text"], id="known-object"
        ),
    ],
)
def test_unknown_keys(value: dict[str, Any], expected: list[str]) -> None:
    delivery = body(("messages", value))
    assert [selector(e) for e in decode_delivery(delivery)] == expected
    assert decode_delivery(delivery) == _general_events(delivery, None, None)


def test_on_premise_top_level_is_not_scanned_for_lists() -> None:
    """The flat body's top level is also where an envelope's keys sit when both come: not a value."""
    events = decode_delivery(msgspec.json.encode({"messages": [TEXT], "meta": [{"api_status": "stable"}]}))
    assert [selector(e) for e in events] == ["message:text"]


def test_the_catch_all_receives_unknown_lists() -> None:
    wa = Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:1/0")
    seen: list[tuple[str | None, str | None]] = []

    @wa.on_change()
    def every_change(change: Change) -> None:
        seen.append((change.field, change.list_name))

    @wa.on_change("messages", when=lambda change: change.list_name == "calls")
    def calls_only(change: Change, ctx: EventContext) -> None:
        assert ctx.phone_number_id == "100000000000018"

    result = testing.run(wa, (MODEL / "unknown_lists.json").read_bytes())
    assert seen == [("messages", "calls"), ("messages", "message_echoes"), ("messages", "user_changes")]
    assert len(result.calls_of(calls_only)) == 1


# -- raw by position ---------------------------------------------------------------------------


def test_twins_keep_their_own_raw() -> None:
    events = decode("unmodelled_twins.json")
    first, second, third, fourth = (e.data for e in events)
    assert isinstance(first, Message) and isinstance(second, Message)
    assert first.raw is not None and second.raw is not None
    assert (first.raw["poll_vote"], second.raw["poll_vote"]) == ({"option": "red"}, {"option": "blue"})
    assert isinstance(third, Message) and isinstance(fourth, Message)
    assert third.raw is not None and fourth.raw is not None
    assert [third.raw["interactive"]["carousel_reply"], fourth.raw["interactive"]["carousel_reply"]] == [
        {"card": 1},
        {"card": 2},
    ]


def test_twins_keep_their_own_raw_on_the_slow_path() -> None:
    red = {"from": "1", "id": "wamid.P", "timestamp": "1", "type": "poll_vote", "poll_vote": {"option": "red"}}
    blue = {**red, "poll_vote": {"option": "blue"}}
    events = decode_delivery(body(("messages", {"messages": [red, ODD, blue]})))
    raws = [e.data.raw for e in events if isinstance(e.data, Message)]
    assert raws == [red, blue]


# -- numbers sent as strings -------------------------------------------------------------------


def test_numbers_sent_as_strings_are_read_as_numbers() -> None:
    order, location, placeholder, fraction, text = decode("numbers_as_strings.json")
    assert isinstance(order.data, Message) and order.data.order is not None
    items = order.data.order.product_items or []
    assert [(i.quantity, i.item_price) for i in items] == [(2, 12.5), (1, 3.0)]
    assert isinstance(location.data, Message) and location.data.location is not None
    assert (location.data.location.latitude, location.data.location.longitude) == (52.520008, -13.404954)
    assert msgspec.to_builtins(location.data)["location"]["latitude"] == 52.520008  # a number from now on
    assert order.ctx.sender_name == location.ctx.sender_name == "Ana Example"
    # Strings that are not numbers of the attribute's type still do not fit: kept whole, as sent.
    assert (
        isinstance(placeholder.data, Change) and placeholder.data.value["location"]["latitude"] == "LOCATION_LATITUDE"
    )
    assert isinstance(fraction.data, Change) and fraction.data.value["order"]["product_items"][0]["quantity"] == "1.5"
    assert isinstance(text.data, Message) and text.data.text is not None


def test_the_catch_all_of_orders_receives_a_string_quantity() -> None:
    wa = Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:1/0")

    @wa.on_message("order")
    def on_order(message: Message) -> None: ...

    result = testing.run(wa, (MODEL / "numbers_as_strings.json").read_bytes())
    assert [call.data.id for call in result.calls_of(on_order)] == ["wamid.MODEL100"]


@pytest.mark.parametrize(
    "message,path,expected",
    [
        pytest.param(
            {"type": "edit", "edit": {"original_message_id": "m", "message": {"type": "location", "location": {
                "latitude": "1.5", "longitude": "2"}}}},
            ("edit", "message", "location", "longitude"),
            2.0,
            id="edited-location",
        ),
        pytest.param(
            {"type": "location", "location": {"latitude": "-0.5", "longitude": "1e1"}},
            ("location", "longitude"),
            10.0,
            id="json-number-syntax",
        ),
    ],
)  # fmt: skip
def test_numbers_as_strings_cases(message: dict[str, Any], path: tuple[str, ...], expected: float) -> None:
    (event,) = decode_delivery(body(("messages", {"messages": [message]})))
    assert event.kind == "message"
    value: Any = msgspec.to_builtins(event.data)
    for key in path:
        value = value[key]
    assert value == expected


@pytest.mark.parametrize(
    "latitude",
    [
        pytest.param("NaN", id="nan"),
        pytest.param("1e999", id="out-of-range"),
        pytest.param("", id="empty"),
        pytest.param("0x10", id="hex"),
        pytest.param("1_0", id="underscore"),
        pytest.param(" 52.5", id="leading-blank"),
        pytest.param("52.5 ", id="trailing-blank"),
        pytest.param("+1", id="plus"),
    ],
)
def test_strings_that_are_not_json_numbers_still_do_not_fit(latitude: str) -> None:
    (event,) = decode_delivery(
        body(("messages", {"messages": [{"type": "location", "location": {"latitude": latitude}}]}))
    )
    assert event.kind == "change" and event.data.value["location"]["latitude"] == latitude  # type: ignore[union-attr]


def test_on_premise_numbers_as_strings() -> None:
    flat = {"messages": [{"type": "location", "location": {"latitude": "52.5", "longitude": "13.4"}}]}
    (event,) = decode_delivery(msgspec.json.encode(flat))
    assert isinstance(event.data, Message) and event.data.location is not None
    assert event.data.location.latitude == 52.5


# -- across the worker's MessagePack boundary --------------------------------------------------

_TYPES: dict[str, type[Message | Status | Error | Change]] = {
    "message": Message,
    "status": Status,
    "error": Error,
    "change": Change,
}


def _all_bodies() -> list[Any]:
    files = sorted(PAYLOADS.glob("**/*.json"))
    if SHARED_PAYLOADS.is_dir():
        files += sorted(SHARED_PAYLOADS.glob("*.json"))
    return [pytest.param(path.read_bytes(), id=path.name) for path in files]


@pytest.mark.parametrize("delivery", _all_bodies())
def test_context_and_event_survive_msgpack(delivery: bytes) -> None:
    """As the worker carries a unit between processes: ctx and data encoded apart, decoded by type."""
    encode = msgspec.msgpack.Encoder().encode
    for event in decode_delivery(delivery, delivery_id="d", received_at=1700000000000):
        ctx = msgspec.msgpack.decode(encode(event.ctx), type=EventContext)
        assert ctx == event.ctx
        assert (ctx.entry_datetime, ctx.sender_name) == (event.ctx.entry_datetime, event.ctx.sender_name)
        assert msgspec.msgpack.decode(encode(event.data), type=_TYPES[event.kind]) == event.data


def test_new_context_fields_round_trip() -> None:
    events = decode("unknown_lists.json") + decode("statuses_with_contacts.json")
    assert any(e.ctx.entry_time for e in events) and any(e.kind == "status" and e.ctx.contact for e in events)
    for event in events:
        encoded = msgspec.msgpack.encode(event.ctx)
        assert msgspec.msgpack.decode(encoded, type=EventContext) == event.ctx
    change = Change(field="messages", value={"calls": [{"id": "c"}]}, list_name="calls")
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(change), type=Change) == change
    assert "list_name" not in msgspec.to_builtins(Change(field="x", value=1))  # unset: not encoded


# -- through the callbacks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "entry_time.json",
        "statuses_with_contacts.json",
        "unknown_lists.json",
        "unmodelled_twins.json",
        "numbers_as_strings.json",
    ],
)
def test_every_event_reaches_a_catch_all_once_in_order(name: str) -> None:
    wa = Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:1/0")
    seen: list[tuple[str, EventContext]] = []

    @wa.on_message()
    def messages(message: Message, ctx: EventContext) -> None:
        seen.append(("message", ctx))

    @wa.on_status()
    def statuses(status: Status, ctx: EventContext) -> None:
        seen.append(("status", ctx))

    @wa.on_error()
    def errors(error: Error, ctx: EventContext) -> None:
        seen.append(("error", ctx))

    @wa.on_change()
    def changes(change: Change, ctx: EventContext) -> None:
        seen.append(("change", ctx))

    result = testing.run(wa, (MODEL / name).read_bytes(), received_at=1)
    assert not result.unhandled
    assert [(e.kind, e.ctx) for e in result.events] == seen
