"""Typed events, named as in WhatsApp's JSON (``from`` becomes ``from_``).

Every struct is frozen, keyword-only, skips unknown fields and omits unset ones when encoded,
so ``msgspec.to_builtins(event)`` gives back the familiar JSON shape, and an event survives an
encode/decode round trip unchanged (the worker re-encodes events it retries).

Types not known today are not errors: a message of an unknown ``type`` (or an ``interactive``
of an unknown ``interactive.type``) keeps its whole payload in `Message.raw`; a ``field`` this
version does not model arrives as a `Change` carrying its raw ``value``, and so does a list this
version does not model beside ``messages`` in a ``messages`` value (`Change.list_name`).
Conveniences that are computed (``datetime``, ``media``, ``in_reply_to``...) are properties,
never fields, so they do not change the JSON shape.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Final

import msgspec

__all__ = [
    "CHANGE_TYPES",
    "KNOWN_INTERACTIVE_TYPES",
    "KNOWN_MESSAGE_TYPES",
    "AccountReviewUpdate",
    "AccountUpdate",
    "Address",
    "BusinessCapabilityUpdate",
    "Button",
    "CallPermissionReply",
    "Change",
    "ChangeValue",
    "Contact",
    "ContactCard",
    "Context",
    "Conversation",
    "ConversationOrigin",
    "Edit",
    "Email",
    "Error",
    "ErrorData",
    "EventContext",
    "Identity",
    "Interactive",
    "InteractiveReply",
    "Location",
    "Media",
    "Message",
    "MessageTemplateQualityUpdate",
    "MessageTemplateStatusUpdate",
    "Metadata",
    "Name",
    "NfmReply",
    "Order",
    "Org",
    "Phone",
    "PhoneNumberNameUpdate",
    "PhoneNumberQualityUpdate",
    "Pricing",
    "ProductItem",
    "Profile",
    "Reaction",
    "Referral",
    "ReferredProduct",
    "Revoke",
    "Status",
    "System",
    "TemplateCategoryUpdate",
    "Text",
    "Unsupported",
    "Url",
    "WelcomeMessage",
]


class _Base(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, gc=False):
    # gc=False: events are decoded by the thousand and never form reference cycles (they are
    # frozen, and their dicts come from JSON), so the garbage collector need not track them.
    pass


def _to_datetime(value: str | int | None) -> _dt.datetime | None:
    if value is None or value == "":
        return None
    try:
        return _dt.datetime.fromtimestamp(int(value), tz=_dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None  # a documentation placeholder such as "<TIMESTAMP>"


# -- who and where ---------------------------------------------------------------------------


class Metadata(_Base, frozen=True):
    """The business phone number that received the notification (``value.metadata``)."""

    display_phone_number: str | None = None
    phone_number_id: str | None = None


class Profile(_Base, frozen=True):
    name: str | None = None
    username: str | None = None
    country_code: str | None = None


class Contact(_Base, frozen=True):
    """The user a message came from, or a status went to (``value.contacts[]``).

    ``wa_id`` can be empty or absent when WhatsApp gives only the business-scoped ``user_id``.
    """

    wa_id: str | None = None
    profile: Profile | None = None
    user_id: str | None = None
    parent_user_id: str | None = None

    @property
    def name(self) -> str | None:
        """The user's profile name."""
        return self.profile.name if self.profile else None


# -- errors ----------------------------------------------------------------------------------


class ErrorData(_Base, frozen=True):
    details: str | None = None


class Error(_Base, frozen=True):
    """An error, in the older ``{code, title, details}`` or the newer ``{code, title, message,
    error_data: {details}, href}`` shape. Used for value-level errors (an event of its own) and
    in ``Message.errors`` and ``Status.errors``."""

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


# -- message content -------------------------------------------------------------------------


class Text(_Base, frozen=True):
    body: str = ""


class Media(_Base, frozen=True):
    """Image, audio, voice, video, document or sticker: ``message.media`` whatever the type.

    ``url`` is set by newer Cloud API versions; ``file`` is the On-Premise path; ``metadata`` is a
    sticker pack's description (keys with dashes, so kept as a dict).
    """

    id: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool | None = None
    animated: bool | None = None
    url: str | None = None
    link: str | None = None
    file: str | None = None
    metadata: dict[str, Any] | None = None


class Location(_Base, frozen=True):
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    address: str | None = None
    url: str | None = None


class Name(_Base, frozen=True):
    formatted_name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    middle_name: str | None = None
    suffix: str | None = None
    prefix: str | None = None


class Phone(_Base, frozen=True):
    phone: str | None = None
    wa_id: str | None = None
    type: str | None = None


class Email(_Base, frozen=True):
    email: str | None = None
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
    url: str | None = None
    type: str | None = None


class ContactCard(_Base, frozen=True):
    """A contact card the user shared (``type: "contacts"``, one per ``message.contacts[]``)."""

    name: Name | None = None
    phones: list[Phone] | None = None
    emails: list[Email] | None = None
    addresses: list[Address] | None = None
    org: Org | None = None
    urls: list[Url] | None = None
    birthday: str | None = None
    ims: list[dict[str, Any]] | None = None
    vcard: str | None = None
    contact_image: str | None = None


class InteractiveReply(_Base, frozen=True):
    """The button or list row the user chose."""

    id: str | None = None
    title: str | None = None
    description: str | None = None


class NfmReply(_Base, frozen=True):
    """A WhatsApp Flow's reply (``interactive.type: "nfm_reply"``)."""

    name: str | None = None
    body: str | None = None
    response_json: str | None = None

    @property
    def response(self) -> dict[str, Any]:
        """``response_json`` decoded (an empty dict when absent or not a JSON object)."""
        if not self.response_json:
            return {}
        try:
            value = msgspec.json.decode(self.response_json)
        except msgspec.DecodeError:
            return {}
        return value if isinstance(value, dict) else {}


class CallPermissionReply(_Base, frozen=True):
    response: str | None = None
    response_source: str | None = None
    is_permanent: bool | None = None
    expiration_timestamp: int | str | None = None


#: ``interactive.type`` values modelled below; any other keeps the message whole in `Message.raw`.
KNOWN_INTERACTIVE_TYPES: Final = frozenset({"button_reply", "list_reply", "nfm_reply", "call_permission_reply"})


class Interactive(_Base, frozen=True):
    type: str | None = None
    button_reply: InteractiveReply | None = None
    list_reply: InteractiveReply | None = None
    nfm_reply: NfmReply | None = None
    call_permission_reply: CallPermissionReply | None = None

    @property
    def reply(self) -> InteractiveReply | None:
        """The chosen button or list row, whichever it is."""
        return self.button_reply or self.list_reply


class Button(_Base, frozen=True):
    """A template quick-reply button press (``type: "button"``)."""

    text: str | None = None
    payload: str | None = None


class Reaction(_Base, frozen=True):
    """A reaction; a removed reaction has an empty or missing ``emoji``."""

    message_id: str | None = None
    emoji: str | None = None

    @property
    def removed(self) -> bool:
        return not self.emoji


class ProductItem(_Base, frozen=True):
    product_retailer_id: str | None = None
    quantity: int | None = None
    item_price: float | None = None
    currency: str | None = None


class Order(_Base, frozen=True):
    catalog_id: str | None = None
    text: str | None = None
    product_items: list[ProductItem] | None = None


class System(_Base, frozen=True):
    """A system message: ``user_changed_number``, ``user_changed_user_id``, ``customer_identity_changed``..."""

    type: str | None = None
    body: str | None = None
    wa_id: str | None = None
    new_wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    identity: str | None = None
    customer: str | None = None
    user: str | None = None


class Identity(_Base, frozen=True):
    """On a message when ``show_security_notifications`` is on: the sender's identity key changed."""

    acknowledged: bool | None = None
    created_timestamp: int | str | None = None
    hash: str | None = None


class Unsupported(_Base, frozen=True):
    type: str | None = None


class Revoke(_Base, frozen=True):
    """A message the user deleted (``type: "revoke"``)."""

    original_message_id: str | None = None


class ReferredProduct(_Base, frozen=True):
    catalog_id: str | None = None
    product_retailer_id: str | None = None


class Context(_Base, frozen=True):
    """Set when a message replies to, or forwards, another one."""

    from_: str | None = msgspec.field(default=None, name="from")
    id: str | None = None
    forwarded: bool | None = None
    frequently_forwarded: bool | None = None
    referred_product: ReferredProduct | None = None
    mentions: list[Any] | None = None


class WelcomeMessage(_Base, frozen=True):
    text: str | None = None


class Referral(_Base, frozen=True):
    """The ad or post a click-to-WhatsApp conversation started from."""

    source_url: str | None = None
    source_id: str | None = None
    source_type: str | None = None
    headline: str | None = None
    body: str | None = None
    media_type: str | None = None
    image_url: str | None = None
    video_url: str | None = None
    thumbnail_url: str | None = None
    ctwa_clid: str | None = None
    ref: str | None = None
    welcome_message: WelcomeMessage | None = None


#: Message types this version models; any other keeps its whole payload in `Message.raw`.
KNOWN_MESSAGE_TYPES: Final = frozenset(
    {
        "text", "image", "audio", "video", "document", "sticker", "voice", "location", "contacts",
        "interactive", "button", "reaction", "order", "system", "unknown", "unsupported",
        "edit", "revoke", "request_welcome",
    }
)  # fmt: skip


class Message(_Base, frozen=True):
    """An incoming message (``value.messages[]``). ``type`` says which attribute holds its content:
    ``message.text`` for ``"text"``, ``message.image`` for ``"image"`` and so on."""

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
    contacts: list[ContactCard] | None = None
    interactive: Interactive | None = None
    button: Button | None = None
    reaction: Reaction | None = None
    order: Order | None = None
    system: System | None = None
    identity: Identity | None = None
    unsupported: Unsupported | None = None
    edit: Edit | None = None
    revoke: Revoke | None = None
    referral: Referral | None = None
    errors: list[Error] | None = None
    #: Business-scoped user id, set with or instead of ``from``.
    from_user_id: str | None = None
    from_parent_user_id: str | None = None
    from_logical_id: str | None = None
    group_id: str | None = None
    #: How the message came about, e.g. ``"contact_request/other"`` for a shared contact card.
    origin: str | None = None
    #: The whole message as JSON builtins, set only when this version does not model its ``type``
    #: (or its ``interactive.type``).
    raw: dict[str, Any] | None = None

    @property
    def datetime(self) -> _dt.datetime | None:
        """``timestamp`` as an aware UTC datetime (None for a placeholder value)."""
        return _to_datetime(self.timestamp)

    @property
    def sender(self) -> str | None:
        """The sender's phone number, or the business-scoped user id when there is none."""
        return self.from_ or self.from_user_id

    @property
    def media(self) -> Media | None:
        """The media object whatever the media type (image, audio, voice, video, document, sticker)."""
        return self.image or self.audio or self.voice or self.video or self.document or self.sticker

    @property
    def in_reply_to(self) -> str | None:
        """The id of the message this one replies to (``context.id``)."""
        return self.context.id if self.context is not None else None

    @property
    def reply_id(self) -> str | None:
        """The id the user chose: an interactive button or list row id, or a template button's payload."""
        if self.interactive is not None:
            reply = self.interactive.reply
            return reply.id if reply is not None else None
        if self.button is not None:
            return self.button.payload
        return None

    @property
    def body(self) -> str | None:
        """The text the user wrote: a text's body, or a media caption."""
        if self.text is not None:
            return self.text.body
        media = self.media
        return media.caption if media is not None else None


class Edit(_Base, frozen=True):
    """A message the user edited (``type: "edit"``): ``message`` is its new content."""

    original_message_id: str | None = None
    message: Message | None = None


# -- statuses --------------------------------------------------------------------------------


class ConversationOrigin(_Base, frozen=True):
    type: str | None = None


class Pricing(_Base, frozen=True):
    """Both pricing forms: conversation-based (``billable``, ``pricing_model: "CBP"``, ``category``)
    and per-message (``pricing_model: "PMP"``, ``type: "regular" | "free_customer_service"``...)."""

    billable: bool | None = None
    pricing_model: str | None = None
    category: str | None = None
    type: str | None = None


class Conversation(_Base, frozen=True):
    id: str | None = None
    origin: ConversationOrigin | None = None
    expiration_timestamp: int | str | None = None
    pricing: Pricing | None = None

    @property
    def expiration(self) -> _dt.datetime | None:
        return _to_datetime(self.expiration_timestamp)


class Status(_Base, frozen=True):
    """A status update of a message the business sent (``value.statuses[]``): ``sent``,
    ``delivered``, ``read``, ``played``, ``failed``, ``deleted`` or a value not known today."""

    id: str | None = None
    status: str | None = None
    timestamp: str | int | None = None
    recipient_id: str | None = None
    recipient_user_id: str | None = None
    recipient_parent_user_id: str | None = None
    parent_user_id: str | None = None
    parent_recipient_user_id: str | None = None
    recipient_type: str | None = None
    recipient_participant_id: str | None = None
    recipient_participant_user_id: str | None = None
    recipient_participant_parent_user_id: str | None = None
    participant_recipient_id: str | None = None
    conversation: Conversation | None = None
    pricing: Pricing | None = None
    errors: list[Error] | None = None
    biz_opaque_callback_data: str | None = None
    type: str | None = None

    @property
    def datetime(self) -> _dt.datetime | None:
        """``timestamp`` as an aware UTC datetime."""
        return _to_datetime(self.timestamp)

    @property
    def recipient(self) -> str | None:
        """The recipient's phone number, or the business-scoped user id when there is none."""
        return self.recipient_id or self.recipient_user_id

    @property
    def error(self) -> Error | None:
        """The first error of a failed status."""
        return self.errors[0] if self.errors else None


# -- other fields ----------------------------------------------------------------------------


class MessageTemplateStatusUpdate(_Base, frozen=True):
    """``message_template_status_update``: a template was approved, rejected, paused, disabled..."""

    event: str | None = None
    message_template_id: int | str | None = None
    message_template_name: str | None = None
    message_template_language: str | None = None
    message_template_category: str | None = None
    reason: str | None = None
    disable_info: dict[str, Any] | None = None
    other_info: dict[str, Any] | None = None
    rejection_info: dict[str, Any] | None = None


class MessageTemplateQualityUpdate(_Base, frozen=True):
    previous_quality_score: str | None = None
    new_quality_score: str | None = None
    message_template_id: int | str | None = None
    message_template_name: str | None = None
    message_template_language: str | None = None


class TemplateCategoryUpdate(_Base, frozen=True):
    message_template_id: int | str | None = None
    message_template_name: str | None = None
    message_template_language: str | None = None
    previous_category: str | None = None
    new_category: str | None = None
    correct_category: str | None = None
    category_update_timestamp: int | str | None = None


class PhoneNumberQualityUpdate(_Base, frozen=True):
    display_phone_number: str | None = None
    event: str | None = None
    current_limit: str | None = None
    old_limit: str | None = None
    max_daily_conversation_per_phone: int | None = None


class PhoneNumberNameUpdate(_Base, frozen=True):
    display_phone_number: str | None = None
    decision: str | None = None
    requested_verified_name: str | None = None
    rejection_reason: str | None = None


class AccountUpdate(_Base, frozen=True):
    """``account_update``: ``event`` says what happened; the other attributes depend on it."""

    event: str | None = None
    phone_number: str | None = None
    country: str | None = None
    ban_info: dict[str, Any] | None = None
    restriction_info: list[dict[str, Any]] | None = None
    violation_info: dict[str, Any] | None = None
    waba_info: dict[str, Any] | None = None
    disconnection_info: dict[str, Any] | None = None
    volume_tier_info: dict[str, Any] | None = None
    partner_client_certification_info: dict[str, Any] | None = None
    auth_international_rate_eligibility: dict[str, Any] | None = None


class AccountReviewUpdate(_Base, frozen=True):
    decision: str | None = None


class BusinessCapabilityUpdate(_Base, frozen=True):
    max_daily_conversation_per_phone: int | None = None
    max_phone_numbers_per_business: int | None = None
    max_daily_conversations_per_business: int | str | None = None
    max_phone_numbers_per_waba: int | None = None


ChangeValue = (
    MessageTemplateStatusUpdate
    | MessageTemplateQualityUpdate
    | TemplateCategoryUpdate
    | PhoneNumberQualityUpdate
    | PhoneNumberNameUpdate
    | AccountUpdate
    | AccountReviewUpdate
    | BusinessCapabilityUpdate
)

#: The typed struct of each ``field`` this version models; `Change.typed` uses it.
CHANGE_TYPES: Final[dict[str, type[ChangeValue]]] = {
    "message_template_status_update": MessageTemplateStatusUpdate,
    "message_template_quality_update": MessageTemplateQualityUpdate,
    "template_category_update": TemplateCategoryUpdate,
    "phone_number_quality_update": PhoneNumberQualityUpdate,
    "phone_number_name_update": PhoneNumberNameUpdate,
    "account_update": AccountUpdate,
    "account_review_update": AccountReviewUpdate,
    "business_capability_update": BusinessCapabilityUpdate,
}


class Change(_Base, frozen=True):
    """A change of a ``field`` other than ``messages`` (template, account, quality updates,
    calls, flows...), and anything that does not fit the model, kept whole.

    ``value`` is the change's value exactly as sent (JSON builtins), so nothing Meta adds is
    lost; `typed` gives the typed struct for the common fields.

    A list this version does not model beside ``messages`` in a ``messages`` value (``calls``,
    ``message_echoes``...) is a change of its own, so that a list Meta adds there reaches the
    catch-all instead of vanishing: ``field`` is ``"messages"``, ``list_name`` the list's key,
    and ``value`` the value as sent without the lists that became other events (its messages,
    statuses, errors and other such lists), so ``metadata`` and ``contacts`` stay beside it.
    """

    field: str | None = None
    value: Any = None
    #: The key of the unmodelled list this change carries (``"calls"``); None for any other change.
    #: Omitted from the encoded form when None, so the idempotency key of every other change is
    #: what it was before this attribute existed.
    list_name: str | None = None

    @property
    def typed(self) -> ChangeValue | None:
        """The value as its typed struct (`MessageTemplateStatusUpdate` for
        ``message_template_status_update``...); None for other fields or a value that does not fit."""
        cls = CHANGE_TYPES.get(self.field or "")
        if cls is None or not isinstance(self.value, dict):
            return None
        try:
            return msgspec.convert(self.value, cls)
        except msgspec.ValidationError:
            return None


# -- context ---------------------------------------------------------------------------------


class EventContext(_Base, frozen=True):
    """Where an event came from: passed as a second argument to callbacks that take one.

    The worker carries it between processes as MessagePack, next to the event; every attribute is
    a plain value for that reason, and anything computed is a property.

    :ivar waba_id: the WhatsApp Business Account id (``entry[].id``).
    :ivar metadata: the receiving business number (``value.metadata``; None for changes of fields
        other than ``messages``, whose values stay untyped, and for the On-Premise body).
    :ivar contact: the user the event is about, from ``value.contacts``: a message's sender; a
        status's recipient; for a value-level error or a `Change` of field ``messages``, the
        value's only contact. None when the value has none that fits.
    :ivar field: the change's ``field`` (``"messages"`` for messages, statuses and errors).
    :ivar entry_time: ``entry[].time`` as sent, in seconds since the epoch (also when sent as a
        string of digits; None when absent or a placeholder). For template, account and quality
        updates it is the only time WhatsApp gives for the event.
    :ivar delivery_id: the id of the webhook delivery (one HTTP request) the event came in.
    :ivar received_at: when the delivery was stored, in milliseconds since the epoch.
    """

    waba_id: str | None = None
    metadata: Metadata | None = None
    contact: Contact | None = None
    field: str | None = None
    entry_time: int | None = None
    delivery_id: str | None = None
    received_at: int | None = None

    @property
    def phone_number_id(self) -> str | None:
        """The id of the business number that received the event."""
        return self.metadata.phone_number_id if self.metadata else None

    @property
    def sender_name(self) -> str | None:
        """The profile name of the message's sender (of the status's recipient, for a status)."""
        return self.contact.name if self.contact else None

    def reply(self, content: Any, **options: Any) -> Any:
        """Answer the event's sender from the number it arrived on (a str is a text message).

        Inside a callback of a Webhook with ``api_keys=...``: the send is recorded, so a rerun of
        the same callback on the same event (a retry, a redelivery) returns the recorded result
        instead of sending again. See docs/replying.md.
        """
        from .replies import current

        return current().reply(content, **options)

    def react(self, emoji: str) -> Any:
        """React to the event's message with ``emoji`` (recorded like `reply`)."""
        from .replies import current

        return current().react(emoji)

    def mark_read(self, *, typing: bool = False) -> None:
        """Mark the event's message as read (and show the typing indicator with ``typing=True``)."""
        from .replies import current

        current().mark_read(typing=typing)

    @property
    def entry_datetime(self) -> _dt.datetime | None:
        """`entry_time` as an aware UTC datetime."""
        return _to_datetime(self.entry_time)
