"""Request bodies, kind by kind, against the JSON shapes of Meta's Cloud API reference."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from wa_middleware.messaging import types as t
from wa_middleware.messaging.types import message_request

TO = "4915112345678"
HEAD = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": TO}


def body(content: t.Content, reply_to: str | None = None) -> Any:
    return msgspec.json.decode(msgspec.json.encode(message_request(TO, content, reply_to=reply_to)))


CASES = [
    pytest.param(t.Text(body="Hello"), {"type": "text", "text": {"body": "Hello"}}, id="text"),
    pytest.param(
        t.Text(body="see https://example.com", preview_url=True),
        {"type": "text", "text": {"preview_url": True, "body": "see https://example.com"}},
        id="text-preview",
    ),
    pytest.param(t.Image(id="1037543291543636"), {"type": "image", "image": {"id": "1037543291543636"}}, id="image-id"),
    pytest.param(
        t.Image(link="https://example.com/a.jpg", caption="A"),
        {"type": "image", "image": {"link": "https://example.com/a.jpg", "caption": "A"}},
        id="image-link",
    ),
    pytest.param(
        t.Video(link="https://example.com/v.mp4", caption="V"),
        {"type": "video", "video": {"link": "https://example.com/v.mp4", "caption": "V"}},
        id="video",
    ),
    pytest.param(t.Audio(id="42"), {"type": "audio", "audio": {"id": "42"}}, id="audio"),
    pytest.param(
        t.Document(link="https://example.com/r.pdf", caption="Report", filename="r.pdf"),
        {
            "type": "document",
            "document": {"link": "https://example.com/r.pdf", "caption": "Report", "filename": "r.pdf"},
        },
        id="document",
    ),
    pytest.param(t.Sticker(id="7"), {"type": "sticker", "sticker": {"id": "7"}}, id="sticker"),
    pytest.param(
        t.Location(latitude=52.52, longitude=13.405, name="Berlin", address="Pariser Platz"),
        {
            "type": "location",
            "location": {"latitude": 52.52, "longitude": 13.405, "name": "Berlin", "address": "Pariser Platz"},
        },
        id="location",
    ),
    pytest.param(
        t.Reaction(message_id="wamid.IN", emoji="\N{THUMBS UP SIGN}"),
        {"type": "reaction", "reaction": {"message_id": "wamid.IN", "emoji": "\N{THUMBS UP SIGN}"}},
        id="reaction",
    ),
    pytest.param(
        t.Reaction(message_id="wamid.IN", emoji=""),
        {"type": "reaction", "reaction": {"message_id": "wamid.IN", "emoji": ""}},
        id="reaction-removed",
    ),
    pytest.param(
        t.Contacts(
            cards=[
                t.ContactCard(
                    name=t.ContactName(formatted_name="Ana Lima", first_name="Ana", last_name="Lima"),
                    phones=[t.Phone(phone="+49 151 1234", type="CELL", wa_id="491511234")],
                    emails=[t.Email(email="ana@example.com", type="WORK")],
                    addresses=[t.Address(city="Berlin", country_code="DE", type="WORK")],
                    org=t.Org(company="ACME", title="CTO"),
                    urls=[t.Url(url="https://example.com", type="WORK")],
                    birthday="1990-01-31",
                )
            ]
        ),
        {
            "type": "contacts",
            "contacts": [
                {
                    "name": {"formatted_name": "Ana Lima", "first_name": "Ana", "last_name": "Lima"},
                    "phones": [{"phone": "+49 151 1234", "type": "CELL", "wa_id": "491511234"}],
                    "emails": [{"email": "ana@example.com", "type": "WORK"}],
                    "addresses": [{"city": "Berlin", "country_code": "DE", "type": "WORK"}],
                    "org": {"company": "ACME", "title": "CTO"},
                    "urls": [{"url": "https://example.com", "type": "WORK"}],
                    "birthday": "1990-01-31",
                }
            ],
        },
        id="contacts",
    ),
    pytest.param(
        t.Template(
            name="order_update",
            language=t.Language(code="en_US"),
            components=[
                t.Component(
                    type="header",
                    parameters=[t.Parameter(type="image", image=t.MediaRef(link="https://example.com/h.png"))],
                ),
                t.Component(
                    type="body",
                    parameters=[
                        t.Parameter(type="text", text="Ana"),
                        t.Parameter(
                            type="currency",
                            currency=t.Currency(fallback_value="$10.99", code="USD", amount_1000=10990),
                        ),
                        t.Parameter(type="date_time", date_time=t.DateTime(fallback_value="May 1, 2025")),
                    ],
                ),
                t.Component(
                    type="button",
                    sub_type="quick_reply",
                    index="0",
                    parameters=[t.Parameter(type="payload", payload="STOP")],
                ),
            ],
        ),
        {
            "type": "template",
            "template": {
                "name": "order_update",
                "language": {"code": "en_US"},
                "components": [
                    {
                        "type": "header",
                        "parameters": [{"type": "image", "image": {"link": "https://example.com/h.png"}}],
                    },
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": "Ana"},
                            {
                                "type": "currency",
                                "currency": {"fallback_value": "$10.99", "code": "USD", "amount_1000": 10990},
                            },
                            {"type": "date_time", "date_time": {"fallback_value": "May 1, 2025"}},
                        ],
                    },
                    {
                        "type": "button",
                        "sub_type": "quick_reply",
                        "index": "0",
                        "parameters": [{"type": "payload", "payload": "STOP"}],
                    },
                ],
            },
        },
        id="template",
    ),
    pytest.param(
        t.Template(
            name="welcome",
            language=t.Language(code="de"),
            components=[
                t.Component(type="body", parameters=[t.Parameter(type="text", parameter_name="name", text="Ana")])
            ],
        ),
        {
            "type": "template",
            "template": {
                "name": "welcome",
                "language": {"code": "de"},
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "parameter_name": "name", "text": "Ana"}]}
                ],
            },
        },
        id="template-named-parameters",
    ),
    pytest.param(
        t.Interactive(
            type="button",
            header=t.Header(type="text", text="Order"),
            body=t.Body(text="Confirm?"),
            footer=t.Footer(text="Reply below"),
            action=t.ButtonsAction(
                buttons=[
                    t.Button(reply=t.ReplyButton(id="yes", title="Yes")),
                    t.Button(reply=t.ReplyButton(id="no", title="No")),
                ]
            ),
        ),
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "header": {"type": "text", "text": "Order"},
                "body": {"text": "Confirm?"},
                "footer": {"text": "Reply below"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                        {"type": "reply", "reply": {"id": "no", "title": "No"}},
                    ]
                },
            },
        },
        id="interactive-buttons",
    ),
    pytest.param(
        t.Interactive(
            type="list",
            body=t.Body(text="Pick one"),
            action=t.ListAction(
                button="Menu",
                sections=[
                    t.ListSection(
                        title="Food",
                        rows=[
                            t.ListRow(id="pizza", title="Pizza", description="Margherita"),
                            t.ListRow(id="pasta", title="Pasta"),
                        ],
                    )
                ],
            ),
        ),
        {
            "type": "interactive",
            "interactive": {
                "type": "list",
                "body": {"text": "Pick one"},
                "action": {
                    "button": "Menu",
                    "sections": [
                        {
                            "title": "Food",
                            "rows": [
                                {"id": "pizza", "title": "Pizza", "description": "Margherita"},
                                {"id": "pasta", "title": "Pasta"},
                            ],
                        }
                    ],
                },
            },
        },
        id="interactive-list",
    ),
    pytest.param(
        t.Interactive(
            type="cta_url",
            header=t.Header(type="image", image=t.MediaRef(link="https://example.com/h.png")),
            body=t.Body(text="Our site"),
            action=t.CtaUrlAction(parameters=t.CtaUrlParameters(display_text="Open", url="https://example.com")),
        ),
        {
            "type": "interactive",
            "interactive": {
                "type": "cta_url",
                "header": {"type": "image", "image": {"link": "https://example.com/h.png"}},
                "body": {"text": "Our site"},
                "action": {"name": "cta_url", "parameters": {"display_text": "Open", "url": "https://example.com"}},
            },
        },
        id="interactive-cta-url",
    ),
    pytest.param(
        t.Interactive(
            type="flow",
            body=t.Body(text="Book a table"),
            action=t.FlowAction(
                parameters=t.FlowParameters(
                    flow_message_version="3",
                    flow_token="tok-1",
                    flow_id="1234567890",
                    flow_cta="Book",
                    flow_action="navigate",
                    flow_action_payload=t.FlowActionPayload(screen="WELCOME", data={"party": 2}),
                )
            ),
        ),
        {
            "type": "interactive",
            "interactive": {
                "type": "flow",
                "body": {"text": "Book a table"},
                "action": {
                    "name": "flow",
                    "parameters": {
                        "flow_message_version": "3",
                        "flow_token": "tok-1",
                        "flow_id": "1234567890",
                        "flow_cta": "Book",
                        "flow_action": "navigate",
                        "flow_action_payload": {"screen": "WELCOME", "data": {"party": 2}},
                    },
                },
            },
        },
        id="interactive-flow",
    ),
]


@pytest.mark.parametrize(("content", "expected"), CASES)
def test_each_kind_encodes_to_metas_shape(content: t.Content, expected: dict[str, Any]) -> None:
    assert body(content) == {**HEAD, **expected}


def test_a_reply_carries_the_context() -> None:
    assert body(t.Text(body="yes"), reply_to="wamid.IN")["context"] == {"message_id": "wamid.IN"}


def test_nothing_unset_is_sent_as_null() -> None:
    encoded = msgspec.json.encode(message_request(TO, t.Image(id="1")))
    assert b"null" not in encoded
    assert b'"context"' not in encoded


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: t.Image(), id="neither"),
        pytest.param(lambda: t.Document(id="1", link="https://example.com/x"), id="both"),
        pytest.param(lambda: t.MediaRef(), id="media-ref"),
    ],
)
def test_media_takes_exactly_one_of_id_and_link(make: Any) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        make()


def test_mark_read_with_the_typing_indicator() -> None:
    read = t.MarkRead(
        messaging_product="whatsapp",
        status="read",
        message_id="wamid.IN",
        typing_indicator=t.TypingIndicator(type="text"),
    )
    assert msgspec.to_builtins(read) == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.IN",
        "typing_indicator": {"type": "text"},
    }


def test_the_send_answer_decodes_to_a_result() -> None:
    answer = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+49 151 12345678", "wa_id": TO}],
        "messages": [{"id": "wamid.OUT", "message_status": "accepted"}],
        "unknown": {"field": 1},
    }
    response = msgspec.json.decode(msgspec.json.encode(answer), type=t.SendResponse)
    assert t.SendResult.from_response(response) == t.SendResult(
        message_id="wamid.OUT", wa_id=TO, message_status="accepted"
    )
