"""What makes two events "the same event", and which conversation an event belongs to.

Idempotency keys (the Redis hash of an event's claims while its callbacks run, and the base of
their done-marks once they ran, `wa_middleware.worker.marks`):

===========  ================================================================
event        key
===========  ================================================================
message      ``m:<message id>``
status       ``s:<status id>:<status value>`` (``delivered`` and ``read`` of one message are two events)
other        ``h:<blake2b of the kind, account, number, field and the decoded event>``
===========  ================================================================

The conversation of an ordered callback is ``<phone_number_id>:<user>``, where the user is the
sender (``from``, else the business-scoped ``from_user_id``, else the contact's ids) of a message
and the recipient (``recipient_id``, else ``recipient_user_id``) of a status. Errors and other
changes belong to no conversation: they always run unordered.
"""

from __future__ import annotations

import hashlib

import msgspec

from .decode import Event
from .models import Message, Status

__all__ = ["conversation_key", "event_key"]

_encode = msgspec.msgpack.Encoder(order="deterministic").encode


def event_key(event: Event) -> str:
    """The idempotency key of an event: equal for every redelivery of the same event."""
    data = event.data
    if isinstance(data, Message) and data.id:
        return f"m:{data.id}"
    if isinstance(data, Status) and data.id and data.status:
        return f"s:{data.id}:{data.status}"
    ctx = event.ctx
    digest = hashlib.blake2b(
        _encode((event.kind, ctx.waba_id, ctx.phone_number_id, ctx.field, data)), digest_size=16
    ).hexdigest()
    return f"h:{digest}"


def conversation_key(event: Event) -> str | None:
    """``phone_number_id:user`` for messages and statuses; None when the event has no user."""
    data = event.data
    user: str | None = None
    if isinstance(data, Message):
        user = data.from_ or data.from_user_id
        contact = event.ctx.contact
        if not user and contact is not None:
            user = contact.wa_id or contact.user_id
    elif isinstance(data, Status):
        user = data.recipient_id or data.recipient_user_id
    if not user:
        return None
    return f"{event.ctx.phone_number_id or ''}:{user}"
