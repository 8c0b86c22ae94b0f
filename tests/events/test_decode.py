"""The decoder on the suite's own payloads: both formats, every kind, odd parts, bad bodies."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.conftest import PAYLOADS
from wa_middleware import Change, Message, PayloadError, decode_delivery
from wa_middleware.events.decode import Event

MODEL = PAYLOADS / "model"


def summary(events: list[Event]) -> list[str]:
    out = []
    for event in events:
        data: Any = event.data
        if event.kind == "message":
            out.append(f"message:{data.type}" + ("+raw" if data.raw is not None else ""))
        elif event.kind == "status":
            out.append(f"status:{data.status}")
        elif event.kind == "error":
            out.append(f"error:{data.code}")
        else:
            out.append(f"change:{data.field}")
    return out


def decode(name: str) -> list[Event]:
    return decode_delivery((PAYLOADS / name).read_bytes(), delivery_id="d-1", received_at=1700000000000)


@pytest.mark.parametrize(
    "name,expected",
    [
        pytest.param("text.json", ["message:text"], id="text"),
        pytest.param("image.json", ["message:image"], id="image"),
        pytest.param(
            "multi.json",
            ["message:text", "message:text", "message:location", "status:delivered", "status:read"],
            id="multi",
        ),
        pytest.param("unknown_type.json", ["message:hologram+raw"], id="unknown-type"),
        pytest.param("status_failed.json", ["status:failed"], id="status-failed"),
        pytest.param("statuses_three.json", ["status:sent", "status:delivered", "status:read"], id="statuses"),
        pytest.param("value_error.json", ["error:130429"], id="value-error"),
        pytest.param("template_status.json", ["change:message_template_status_update"], id="template"),
        pytest.param("onprem_text.json", ["message:text"], id="onprem-text"),
        pytest.param("onprem_status.json", ["status:read"], id="onprem-status"),
        pytest.param("onprem_errors.json", ["error:1014"], id="onprem-errors"),
        pytest.param(
            "model/interactive_replies.json",
            ["message:interactive"] * 3 + ["message:interactive+raw", "message:button"],
            id="interactive",
        ),
        pytest.param(
            "model/content_types.json",
            [
                "message:contacts",
                "message:order",
                "message:document",
                "message:audio",
                "message:sticker",
                "message:location",
                "message:reaction",
                "message:request_welcome",
            ],
            id="content-types",
        ),
        pytest.param(
            "model/edits_and_system.json",
            ["message:edit", "message:revoke", "message:system", "message:unsupported"],
            id="edits-system",
        ),
        pytest.param(
            "model/statuses_pricing.json",
            ["status:sent", "status:delivered", "status:played", "status:teleported", "status:failed"],
            id="statuses-pricing",
        ),
        pytest.param(
            "model/two_entries.json",
            ["message:text", "change:message_template_status_update", "error:131000", "change:brand_new_field"],
            id="two-entries",
        ),
        pytest.param("model/onprem_mixed.json", ["message:voice", "message:text"], id="onprem-mixed"),
        pytest.param(
            "model/cloud_and_odd_parts.json",
            ["message:text", "change:messages", "change:messages", "message:text", "change:messages"],
            id="odd-parts",
        ),
    ],
)
def test_events_in_order(name: str, expected: list[str]) -> None:
    events = decode(name)
    assert summary(events) == expected
    assert all(e.ctx.delivery_id == "d-1" and e.ctx.received_at == 1700000000000 for e in events)


def test_context_of_a_cloud_message() -> None:
    (event,) = decode("text.json")
    assert event.ctx.waba_id == "200000000000001"
    assert event.ctx.phone_number_id == "100000000000001"
    assert event.ctx.field == "messages"
    assert event.ctx.sender_name == "Ana Example"


def test_each_message_gets_its_own_contact() -> None:
    names = [e.ctx.sender_name for e in decode("multi.json")]
    assert names[:2] == ["Ana Example", "Ben Example"]


def test_both_formats_give_the_same_types() -> None:
    (cloud,) = decode("text.json")
    (onprem,) = decode("onprem_text.json")
    assert type(cloud.data) is type(onprem.data) is Message
    assert type(cloud.ctx) is type(onprem.ctx)
    assert onprem.ctx.waba_id is None and onprem.ctx.metadata is None


def test_interactive_replies() -> None:
    button, row, flow, unknown, template_button = (e.data for e in decode("model/interactive_replies.json"))
    assert button.reply_id == "yes" and button.in_reply_to == "wamid.SENT1"
    assert row.reply_id == "row-2" and row.interactive.list_reply.description == "afternoon"
    assert flow.interactive.nfm_reply.response == {"flow_token": "tok-1", "rating": 5}
    assert flow.reply_id is None
    assert unknown.raw["interactive"]["carousel_tap"] == {"card": 2}
    assert template_button.reply_id == "STOP" and template_button.button.text == "Stop promotions"


def test_content_types() -> None:
    contacts, order, document, audio, sticker, location, reaction, welcome = (
        e.data for e in decode("model/content_types.json")
    )
    assert contacts.contacts[0].emails[0].email == "carla@example.invalid"
    assert [i.item_price for i in order.order.product_items] == [9.99, 20.0]
    assert (document.media.id, document.media.mime_type, document.media.filename) == (
        "media-12",
        "application/pdf",
        "invoice.pdf",
    )
    assert document.body == "my invoice"
    assert audio.media.voice is True and audio.media.id == "media-13"
    assert sticker.media.animated is True
    assert (location.location.latitude, location.location.name) == (52.5, "Office")
    assert reaction.reaction.removed and reaction.reaction.message_id == "wamid.SENT2"
    assert welcome.type == "request_welcome" and welcome.raw is None


def test_edits_revokes_system_unsupported() -> None:
    edit, revoke, system, unsupported = (e.data for e in decode("model/edits_and_system.json"))
    assert edit.edit.message.text.body == "corrected"
    assert revoke.revoke.original_message_id == "wamid.MODEL0"
    assert system.from_ is None and system.system.wa_id == "4915199999999"
    assert unsupported.unsupported.type == "poll_creation"
    assert unsupported.errors[0].detail == "Message type is currently not supported."


def test_statuses_and_pricing_forms() -> None:
    sent, delivered, played, unknown, failed = (e.data for e in decode("model/statuses_pricing.json"))
    assert sent.biz_opaque_callback_data == "order-7"
    assert sent.pricing.pricing_model == "CBP" and sent.conversation.origin.type == "utility"
    assert sent.conversation.expiration is not None
    assert delivered.pricing.type == "regular"
    assert played.status == "played"
    assert unknown.status == "teleported"
    assert failed.error.code == 131047 and failed.error.detail == "More than 24 hours have passed"


def test_two_entries_keep_their_waba() -> None:
    events = decode("model/two_entries.json")
    assert [e.ctx.waba_id for e in events] == ["200000000000002", "200000000000002"] + ["200000000000003"] * 2
    error = events[2].data
    assert error.detail == "older error shape"
    assert events[2].ctx.phone_number_id == "100000000000003"
    assert events[3].data.value == {"anything": [1, 2, 3]}


def test_onprem_identity_and_voice() -> None:
    voice, text = (e.data for e in decode("model/onprem_mixed.json"))
    assert voice.media.file == "/usr/local/wamedia/in/v.ogg"
    assert text.identity.hash == "Sjvjlx8G6Z0="


def test_odd_parts_are_kept_and_the_rest_typed() -> None:
    events = decode("model/cloud_and_odd_parts.json")
    assert events[0].data.text.body == "fine" and events[3].data.text.body == "also fine"
    assert events[0].ctx.sender_name == "Ana Example"  # the contacts survive the slow path
    assert events[1].data.value["location"] == {"latitude": "north", "longitude": "east"}
    assert events[2].data.value == "not an object"
    assert events[4].data.value == {"id": 7, "status": "sent"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"hello", id="not-json"),
        pytest.param(b'{"entry": [', id="truncated"),
        pytest.param(b"\xff\xfe", id="binary"),
    ],
)
def test_not_json_is_a_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_delivery(body)


@pytest.mark.parametrize(
    "body,value",
    [
        pytest.param(b"[1, 2]", [1, 2], id="array"),
        pytest.param(b"42", 42, id="number"),
        pytest.param(b'{"hello": "world"}', {"hello": "world"}, id="other-object"),
        pytest.param(b'{"entry": 5}', {"entry": 5}, id="entry-not-a-list"),
        pytest.param(b'{"messages": "nope"}', "nope", id="flat-messages-not-a-list"),
    ],
)
def test_other_json_becomes_a_change(body: bytes, value: Any) -> None:
    (event,) = decode_delivery(body)
    assert event.kind == "change"
    assert isinstance(event.data, Change)
    assert event.data.value == value


@pytest.mark.parametrize(
    "body,expected",
    [
        pytest.param(b'{"object": "whatsapp_business_account", "entry": []}', [], id="no-entries"),
        pytest.param(b'{"entry": [{"id": 1, "changes": []}]}', [], id="no-changes"),
        pytest.param(b'{"entry": [{"changes": [{"field": "messages"}]}]}', ["change:messages"], id="no-value"),
        pytest.param(
            b'{"entry": [{"changes": [{"field": "messages", "value": {"metadata": {}}}]}]}',
            ["change:messages"],
            id="empty-value",
        ),
        pytest.param(b'{"entry": [{"changes": [{"value": {"a": 1}}]}]}', ["change:None"], id="no-field"),
        pytest.param(b'{"entry": [7, {"changes": [3]}]}', ["change:None", "change:None"], id="odd-items"),
        pytest.param(b'{"entry": [{"id": 12, "changes": [{"field": 5}]}]}', ["change:None"], id="field-not-a-string"),
    ],
)
def test_envelope_shapes(body: bytes, expected: list[str]) -> None:
    assert summary(decode_delivery(body)) == expected


def test_integer_waba_id_becomes_a_string() -> None:
    body = b'{"entry": [{"id": 12, "changes": [{"field": "x", "value": null}]}]}'
    (event,) = decode_delivery(body)
    assert event.ctx.waba_id == "12"


def test_retry_round_trip_keeps_raw_and_subtypes() -> None:
    for event in decode("model/interactive_replies.json") + decode("model/edits_and_system.json"):
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(event.data), type=Message) == event.data


def _envelope(*changes: tuple[str, Any], flat: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"value": value, "field": field} for field, value in changes]}],
    }
    body.update(flat or {})
    return msgspec.json.encode(body)


HOLOGRAM = {"from": "1", "id": "wamid.H", "timestamp": "1", "type": "hologram", "hologram": {"frames": 2}}
CAROUSEL = {"from": "1", "id": "wamid.C", "type": "interactive", "interactive": {"type": "carousel", "carousel": {}}}


@pytest.mark.parametrize(
    "body,expected",
    [
        pytest.param(
            _envelope(("messages", {"messages": [HOLOGRAM, CAROUSEL]}), ("account_update", {"event": "X"})),
            ["message:hologram+raw", "message:interactive+raw", "change:account_update"],
            id="mixed-fields",
        ),
        pytest.param(
            _envelope(("messages", {"messages": [HOLOGRAM, {"type": "location", "location": {"latitude": "n"}}]})),
            ["message:hologram+raw", "change:messages"],
            id="odd-part-beside-unknown-type",
        ),
        pytest.param(
            _envelope(("account_update", {"event": "X"}), flat={"statuses": [{"id": "s", "status": "sent"}]}),
            ["change:account_update", "status:sent"],
            id="envelope-and-flat",
        ),
        pytest.param(
            _envelope(("messages", {"statuses": [{"status": "read"}]}), flat={"extra": 1}),
            ["status:read"],
            id="extra-top-level-key",
        ),
    ],
)
def test_general_path(body: bytes, expected: list[str]) -> None:
    events = decode_delivery(body)
    assert summary(events) == expected
    raws = [e.data.raw for e in events if e.kind == "message" and e.data.raw is not None]
    assert raws[:1] in ([], [HOLOGRAM])


def test_contact_chosen_among_several() -> None:
    value = {
        "contacts": [{"wa_id": "1", "profile": {"name": "One"}}, {"user_id": "US.2", "profile": {"name": "Two"}}],
        "messages": [
            {"from_user_id": "US.2", "id": "a", "type": "text", "text": {"body": "x"}},
            {"from": "1", "id": "b", "type": "text", "text": {"body": "y"}},
            {"from": "3", "id": "c", "type": "text", "text": {"body": "z"}},
        ],
    }
    names = [e.ctx.sender_name for e in decode_delivery(_envelope(("messages", value)))]
    assert names == ["Two", "One", None]


def test_raw_value() -> None:
    from wa_middleware.events.decode import raw_value

    assert raw_value(b'{"a": [1]}') == {"a": [1]}
    with pytest.raises(PayloadError):
        raw_value(b"{")


def _all_bodies() -> list[Any]:
    from tests.conftest import SHARED_PAYLOADS

    files = sorted(PAYLOADS.glob("**/*.json"))
    if SHARED_PAYLOADS.is_dir():
        files += sorted(SHARED_PAYLOADS.glob("*.json"))
    return [pytest.param(path.read_bytes(), id=path.name) for path in files]


@pytest.mark.parametrize("body", _all_bodies())
def test_fast_paths_agree_with_the_general_path(body: bytes) -> None:
    """The one-pass paths are only shortcuts: event for event, they give what the general path gives."""
    from wa_middleware.events.decode import _general_events

    assert decode_delivery(body, delivery_id="d", received_at=7) == _general_events(body, "d", 7)
