"""The event structs: JSON shape, round trips, and the conveniences."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from wa_middleware import Change, Contact, Error, EventContext, Message, Metadata, Status
from wa_middleware.events.models import (
    CHANGE_TYPES,
    AccountReviewUpdate,
    Button,
    Context,
    Interactive,
    InteractiveReply,
    Media,
    MessageTemplateStatusUpdate,
    NfmReply,
    Profile,
    Reaction,
    Text,
)

MESSAGE_JSON: dict[str, Any] = {
    "from": "4915112345678",
    "id": "wamid.A",
    "timestamp": "1700000000",
    "type": "image",
    "context": {"from": "15550001111", "id": "wamid.PREV", "forwarded": True},
    "image": {"id": "m1", "mime_type": "image/jpeg", "sha256": "x", "caption": "look"},
}


def test_to_builtins_gives_back_the_json_shape() -> None:
    message = msgspec.json.decode(msgspec.json.encode(MESSAGE_JSON), type=Message)
    assert msgspec.to_builtins(message) == MESSAGE_JSON


def test_structs_are_frozen() -> None:
    message = Message(id="x")
    with pytest.raises(AttributeError):
        message.id = "y"  # type: ignore[misc]


def test_unknown_fields_are_skipped() -> None:
    message = msgspec.json.decode(b'{"id": "x", "type": "text", "brand_new": {"a": 1}}', type=Message)
    assert message == Message(id="x", type="text")


@pytest.mark.parametrize(
    "timestamp,expected",
    [
        pytest.param("1700000000", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.timezone.utc), id="string"),
        pytest.param(1700000000, dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.timezone.utc), id="int"),
        pytest.param("<TIMESTAMP>", None, id="placeholder"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
        pytest.param(10**30, None, id="overflow"),
    ],
)
def test_datetime(timestamp: str | int | None, expected: dt.datetime | None) -> None:
    assert Message(timestamp=timestamp).datetime == expected
    assert Status(timestamp=timestamp).datetime == expected
    assert Message(timestamp=timestamp).timestamp == timestamp  # the original value stays


@pytest.mark.parametrize(
    "message,sender",
    [
        pytest.param(Message(from_="49151"), "49151", id="phone"),
        pytest.param(Message(from_user_id="US.1"), "US.1", id="bsuid"),
        pytest.param(Message(from_="", from_user_id="US.1"), "US.1", id="empty-phone"),
        pytest.param(Message(), None, id="none"),
    ],
)
def test_sender(message: Message, sender: str | None) -> None:
    assert message.sender == sender


@pytest.mark.parametrize(
    "message,media_id",
    [
        pytest.param(Message(type="image", image=Media(id="i")), "i", id="image"),
        pytest.param(Message(type="audio", audio=Media(id="a", voice=True)), "a", id="audio"),
        pytest.param(Message(type="voice", voice=Media(id="v")), "v", id="voice"),
        pytest.param(Message(type="video", video=Media(id="vi")), "vi", id="video"),
        pytest.param(Message(type="document", document=Media(id="d")), "d", id="document"),
        pytest.param(Message(type="sticker", sticker=Media(id="s")), "s", id="sticker"),
        pytest.param(Message(type="text", text=Text(body="hi")), None, id="text"),
    ],
)
def test_media_whatever_the_type(message: Message, media_id: str | None) -> None:
    assert (message.media.id if message.media else None) == media_id


@pytest.mark.parametrize(
    "message,reply_id",
    [
        pytest.param(
            Message(interactive=Interactive(type="button_reply", button_reply=InteractiveReply(id="b"))),
            "b",
            id="button",
        ),
        pytest.param(
            Message(interactive=Interactive(type="list_reply", list_reply=InteractiveReply(id="l"))), "l", id="list"
        ),
        pytest.param(Message(button=Button(payload="p", text="P")), "p", id="template-button"),
        pytest.param(Message(interactive=Interactive(type="nfm_reply", nfm_reply=NfmReply())), None, id="flow"),
        pytest.param(Message(text=Text(body="x")), None, id="text"),
    ],
)
def test_reply_id(message: Message, reply_id: str | None) -> None:
    assert message.reply_id == reply_id


def test_in_reply_to_and_body() -> None:
    message = msgspec.convert(MESSAGE_JSON, Message)
    assert message.in_reply_to == "wamid.PREV"
    assert message.body == "look"  # the caption
    assert Message(text=Text(body="hey")).body == "hey"
    assert Message().in_reply_to is None
    assert Message(context=Context(forwarded=True)).in_reply_to is None


@pytest.mark.parametrize("emoji,removed", [("👍", False), ("", True), (None, True)])
def test_reaction_removed(emoji: str | None, removed: bool) -> None:
    assert Reaction(message_id="m", emoji=emoji).removed is removed


@pytest.mark.parametrize(
    "response_json,expected",
    [
        pytest.param('{"a": 1}', {"a": 1}, id="object"),
        pytest.param("[1]", {}, id="not-an-object"),
        pytest.param("{nope", {}, id="not-json"),
        pytest.param(None, {}, id="absent"),
    ],
)
def test_flow_response(response_json: str | None, expected: dict[str, Any]) -> None:
    assert NfmReply(response_json=response_json).response == expected


def test_error_detail_both_shapes_decoded() -> None:
    older = msgspec.json.decode(b'{"code": 470, "title": "t", "details": "old"}', type=Error)
    newer = msgspec.json.decode(
        b'{"code": 131049, "title": "t", "message": "m", "error_data": {"details": "new"}}', type=Error
    )
    bare = msgspec.json.decode(b'{"code": 131026, "title": "t", "message": "m"}', type=Error)
    assert (older.detail, newer.detail, bare.detail) == ("old", "new", "m")


def test_status_recipient_and_error() -> None:
    status = Status(recipient_user_id="US.1", errors=[Error(code=131026)])
    assert status.recipient == "US.1"
    assert status.error == Error(code=131026)
    assert Status().error is None


def test_change_typed() -> None:
    change = Change(field="message_template_status_update", value={"event": "APPROVED", "message_template_id": 7})
    assert change.typed == MessageTemplateStatusUpdate(event="APPROVED", message_template_id=7)
    assert Change(field="account_review_update", value={"decision": "APPROVED"}).typed == AccountReviewUpdate(
        decision="APPROVED"
    )
    assert Change(field="brand_new", value={"a": 1}).typed is None
    assert Change(field="account_update", value="not an object").typed is None
    assert Change(field="account_update", value={"event": 5}).typed is None  # does not fit
    assert set(CHANGE_TYPES) >= {
        "message_template_status_update",
        "message_template_quality_update",
        "template_category_update",
        "phone_number_quality_update",
        "phone_number_name_update",
        "account_update",
        "account_review_update",
        "business_capability_update",
    }


def test_context_conveniences() -> None:
    ctx = EventContext(metadata=Metadata(phone_number_id="p"), contact=Contact(profile=Profile(name="Ana")))
    assert (ctx.phone_number_id, ctx.sender_name) == ("p", "Ana")
    assert (EventContext().phone_number_id, EventContext().sender_name) == (None, None)


def test_msgpack_round_trip_of_every_kind() -> None:
    for data in (
        msgspec.convert(MESSAGE_JSON, Message),
        Message(type="hologram", raw={"type": "hologram", "hologram": [1, 2]}),
        Status(status="failed", errors=[Error(code=1)], timestamp=5),
        Change(field="x", value={"nested": [1, {"a": None}]}),
        Error(code=3, error_data=None),
    ):
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(data), type=type(data)) == data
