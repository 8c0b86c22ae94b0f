"""What is sent to the Cloud API messages endpoint and what it answers, as msgspec structs.

Every struct encodes to exactly the JSON that Meta documents for the Cloud API (360dialog forwards
the same bodies unchanged): field names are Meta's, unset optional fields are omitted rather than
sent as ``null`` (Meta rejects some ``null`` values outright), and nothing is renamed.

A message is its *content* (`Text`, `Image`, `Template`, `Interactive`...) plus who it goes to;
`message_request` puts the two together in a `MessageRequest`, the body of
``POST .../messages``. Each content type names its ``type`` in the ClassVar ``kind``, which is
also the key its payload sits under in the body (``{"type": "text", "text": {...}}``).

Answers are decoded leniently: unknown fields are skipped (Meta adds some often) and
``file_size``, which Meta has sent both as a number and as a string of digits, decodes either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import msgspec

__all__ = [
    "Address",
    "Audio",
    "Body",
    "Button",
    "ButtonsAction",
    "Component",
    "ContactCard",
    "ContactName",
    "Contacts",
    "Content",
    "Context",
    "CtaUrlAction",
    "CtaUrlParameters",
    "Currency",
    "DateTime",
    "Document",
    "Email",
    "ErrorBody",
    "ErrorPayload",
    "FlowAction",
    "FlowActionPayload",
    "FlowParameters",
    "Footer",
    "Header",
    "Image",
    "Interactive",
    "Language",
    "ListAction",
    "ListRow",
    "ListSection",
    "Location",
    "MarkRead",
    "MediaInfo",
    "MediaRef",
    "MessageRequest",
    "Org",
    "Parameter",
    "Phone",
    "Reaction",
    "ReplyButton",
    "SendResponse",
    "SendResult",
    "Sticker",
    "Template",
    "Text",
    "TypingIndicator",
    "Url",
    "Video",
    "message_request",
]


class _Base(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Keyword-only, frozen, and unset fields left out of the JSON."""


class _Always(msgspec.Struct, kw_only=True, frozen=True):
    """For the few parts whose defaults Meta requires in the JSON (``"type": "reply"``, ``"name": "flow"``)."""


# -- small parts ---------------------------------------------------------------------------


class Context(_Base, frozen=True):
    """The message a reply quotes (``"context": {"message_id": "<wamid>"}``)."""

    message_id: str


class _MediaBase(_Base, frozen=True):
    """A media object is sent either by the id of an uploaded file or by a public HTTPS link."""

    id: str | None = None
    link: str | None = None

    def __post_init__(self) -> None:
        # Meta answers 400 for both or neither; failing here names the mistake in the caller's frame.
        if (self.id is None) == (self.link is None):
            raise ValueError(f"{type(self).__name__} takes exactly one of id= (an uploaded media id) and link=")


class MediaRef(_MediaBase, frozen=True):
    """An image, video or document inside a template parameter or an interactive header."""

    caption: str | None = None
    filename: str | None = None


# -- message contents ----------------------------------------------------------------------


class Text(_Base, frozen=True):
    """A text message; ``preview_url=True`` renders a preview of the first URL in ``body``."""

    kind: ClassVar[str] = "text"
    body: str
    preview_url: bool | None = None


class Image(_MediaBase, frozen=True):
    kind: ClassVar[str] = "image"
    caption: str | None = None


class Video(_MediaBase, frozen=True):
    kind: ClassVar[str] = "video"
    caption: str | None = None


class Audio(_MediaBase, frozen=True):
    kind: ClassVar[str] = "audio"


class Document(_MediaBase, frozen=True):
    kind: ClassVar[str] = "document"
    caption: str | None = None
    filename: str | None = None


class Sticker(_MediaBase, frozen=True):
    kind: ClassVar[str] = "sticker"


class Location(_Base, frozen=True):
    kind: ClassVar[str] = "location"
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


class Reaction(_Base, frozen=True):
    """A reaction to ``message_id``; an empty ``emoji`` removes the reaction."""

    kind: ClassVar[str] = "reaction"
    message_id: str
    emoji: str


# contacts


class ContactName(_Base, frozen=True):
    formatted_name: str
    first_name: str | None = None
    last_name: str | None = None
    middle_name: str | None = None
    prefix: str | None = None
    suffix: str | None = None


class Phone(_Base, frozen=True):
    phone: str
    type: str | None = None
    wa_id: str | None = None


class Email(_Base, frozen=True):
    email: str
    type: str | None = None


class Address(_Base, frozen=True):
    street: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None
    country_code: str | None = None
    type: str | None = None


class Org(_Base, frozen=True):
    company: str | None = None
    department: str | None = None
    title: str | None = None


class Url(_Base, frozen=True):
    url: str
    type: str | None = None


class ContactCard(_Base, frozen=True):
    """One contact of a contacts message."""

    name: ContactName
    phones: Sequence[Phone] | None = None
    emails: Sequence[Email] | None = None
    addresses: Sequence[Address] | None = None
    org: Org | None = None
    urls: Sequence[Url] | None = None
    birthday: str | None = None


class Contacts(_Base, frozen=True):
    """A contacts message: the body carries the cards as a bare list (``"contacts": [...]``)."""

    kind: ClassVar[str] = "contacts"
    cards: Sequence[ContactCard]


# templates


class Language(_Base, frozen=True):
    code: str


class Currency(_Base, frozen=True):
    fallback_value: str
    code: str
    amount_1000: int


class DateTime(_Base, frozen=True):
    fallback_value: str


class Parameter(_Base, frozen=True):
    """One template parameter: ``type`` says which of the other fields carries its value.

    ``Parameter(type="text", text="Ana")``; with named parameters add ``parameter_name="name"``;
    a quick-reply button's is ``Parameter(type="payload", payload="...")``.
    """

    type: str
    text: str | None = None
    parameter_name: str | None = None
    payload: str | None = None
    currency: Currency | None = None
    date_time: DateTime | None = None
    image: MediaRef | None = None
    video: MediaRef | None = None
    document: MediaRef | None = None
    location: Location | None = None
    coupon_code: str | None = None
    action: Mapping[str, Any] | None = None


class Component(_Base, frozen=True):
    """A template component: ``header``, ``body`` or ``button`` (with ``sub_type`` and ``index``)."""

    type: str
    parameters: Sequence[Parameter] | None = None
    sub_type: str | None = None
    index: str | None = None


class Template(_Base, frozen=True):
    """A template message, the only kind allowed outside the 24-hour customer service window."""

    kind: ClassVar[str] = "template"
    name: str
    language: Language
    components: Sequence[Component] | None = None


# interactive


class Header(_Base, frozen=True):
    """An interactive header: ``type`` is ``text``, ``image``, ``video`` or ``document``."""

    type: str
    text: str | None = None
    image: MediaRef | None = None
    video: MediaRef | None = None
    document: MediaRef | None = None


class Body(_Base, frozen=True):
    text: str


class Footer(_Base, frozen=True):
    text: str


class ReplyButton(_Base, frozen=True):
    id: str
    title: str


class Button(_Always, frozen=True):
    """``{"type": "reply", "reply": {"id", "title"}}``: one reply button, as Meta nests it."""

    reply: ReplyButton
    type: Literal["reply"] = "reply"


class ButtonsAction(_Base, frozen=True):
    buttons: Sequence[Button]


class ListRow(_Base, frozen=True):
    id: str
    title: str
    description: str | None = None


class ListSection(_Base, frozen=True):
    rows: Sequence[ListRow]
    title: str | None = None


class ListAction(_Base, frozen=True):
    button: str
    sections: Sequence[ListSection]


class CtaUrlParameters(_Base, frozen=True):
    display_text: str
    url: str


class CtaUrlAction(_Always, frozen=True):
    parameters: CtaUrlParameters
    name: Literal["cta_url"] = "cta_url"


class FlowActionPayload(_Base, frozen=True):
    screen: str
    data: Mapping[str, Any] | None = None


class FlowParameters(_Base, frozen=True):
    flow_message_version: str
    flow_cta: str
    flow_id: str | None = None
    flow_name: str | None = None
    flow_token: str | None = None
    flow_action: str | None = None
    flow_action_payload: FlowActionPayload | None = None
    mode: str | None = None


class FlowAction(_Always, frozen=True):
    parameters: FlowParameters
    name: Literal["flow"] = "flow"


class Interactive(_Base, frozen=True):
    """An interactive message: ``type`` is ``button``, ``list``, ``cta_url`` or ``flow``."""

    kind: ClassVar[str] = "interactive"
    type: str
    action: ButtonsAction | ListAction | CtaUrlAction | FlowAction
    body: Body | None = None
    header: Header | None = None
    footer: Footer | None = None


#: Every content a message can carry.
Content = Text | Image | Video | Audio | Document | Sticker | Location | Contacts | Reaction | Template | Interactive


# -- request bodies ------------------------------------------------------------------------


class MessageRequest(_Base, frozen=True):
    """The body of ``POST .../messages`` for a message; build it with `message_request`.

    ``messaging_product`` and ``recipient_type`` have no defaults on purpose: omitted defaults
    would leave them out of the JSON, and Meta requires ``messaging_product``.
    """

    messaging_product: Literal["whatsapp"]
    recipient_type: str
    to: str
    type: str
    context: Context | None = None
    text: Text | None = None
    image: Image | None = None
    video: Video | None = None
    audio: Audio | None = None
    document: Document | None = None
    sticker: Sticker | None = None
    location: Location | None = None
    contacts: Sequence[ContactCard] | None = None
    reaction: Reaction | None = None
    template: Template | None = None
    interactive: Interactive | None = None


def message_request(to: str, content: Content, *, reply_to: str | None = None) -> MessageRequest:
    """The request body that sends ``content`` to ``to``, quoting ``reply_to`` when given.

    :param to: the recipient's WhatsApp id or phone number.
    :param content: what to send.
    :param reply_to: the wamid of the message this one replies to (shown quoted).
    """
    payload: Any = content.cards if isinstance(content, Contacts) else content
    return MessageRequest(
        messaging_product="whatsapp",
        recipient_type="individual",
        to=to,
        type=content.kind,
        context=Context(message_id=reply_to) if reply_to else None,
        **{content.kind: payload},
    )


class TypingIndicator(_Base, frozen=True):
    type: str


class MarkRead(_Base, frozen=True):
    """The body that marks ``message_id`` (and every earlier message) as read, optionally showing typing."""

    messaging_product: Literal["whatsapp"]
    status: Literal["read"]
    message_id: str
    typing_indicator: TypingIndicator | None = None


# -- answers -------------------------------------------------------------------------------


class _Answer(msgspec.Struct, kw_only=True, frozen=True):
    """Answers keep every field (no omit_defaults): they are decoded, not sent."""


class _SentContact(_Answer, frozen=True):
    input: str | None = None
    wa_id: str | None = None


class _SentMessage(_Answer, frozen=True):
    id: str
    message_status: str | None = None


class SendResponse(_Answer, frozen=True):
    """The answer to a send: ``{"messaging_product", "contacts": [...], "messages": [{"id"}]}``."""

    messages: list[_SentMessage]
    contacts: list[_SentContact] = msgspec.field(default_factory=list)
    messaging_product: str | None = None


class SendResult(_Answer, frozen=True):
    """What a send returns: the wamid whose statuses arrive on the webhook later.

    :ivar message_id: the wamid of the sent message.
    :ivar wa_id: the recipient's WhatsApp id, as the API resolved ``to`` (None when not given).
    :ivar message_status: ``accepted``, ``held_for_quality_assessment`` or ``paused`` (templates), if given.
    :ivar replayed: True when this result was recorded by an earlier run of the same callback and
        returned from the ledger instead of sending again (`wa_middleware.messaging.Replies`).
    """

    message_id: str
    wa_id: str | None = None
    message_status: str | None = None
    replayed: bool = False

    @classmethod
    def from_response(cls, response: SendResponse) -> SendResult:
        if not response.messages:
            raise ValueError("the answer names no sent message")
        first = response.messages[0]
        contact = response.contacts[0] if response.contacts else None
        return cls(
            message_id=first.id,
            wa_id=contact.wa_id if contact else None,
            message_status=first.message_status,
        )


class MediaInfo(_Answer, frozen=True):
    """The answer of ``GET /<media id>``: Meta's download URL (valid about 5 minutes) and the file's facts."""

    id: str
    url: str
    mime_type: str | None = None
    sha256: str | None = None
    file_size: int | None = None
    messaging_product: str | None = None


class _Uploaded(_Answer, frozen=True):
    id: str


class ErrorBody(_Answer, frozen=True):
    """Meta's ``error`` object; ``error_data.details`` often says more than ``message``."""

    message: str | None = None
    type: str | None = None
    code: int | None = None
    error_subcode: int | None = None
    error_user_title: str | None = None
    error_user_msg: str | None = None
    error_data: dict[str, Any] | None = None
    fbtrace_id: str | None = None


class ErrorPayload(_Answer, frozen=True):
    """``{"error": {...}}``, the error answer of the Cloud API (relayed unchanged by 360dialog)."""

    error: ErrorBody
