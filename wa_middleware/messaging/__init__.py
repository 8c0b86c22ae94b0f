"""Send WhatsApp messages through the Cloud API (360dialog's host or Meta's), and reply from callbacks once.

* `Client` / `AsyncClient`: the messages endpoint on httpx, every message kind, media, retries.
* `Dialog360`, `Meta`, `Credentials`: where to call and with which key, per phone number id.
* `SendLedger` and `Replies`: a callback's sends recorded in Redis, so a rerun does not send them again.
* `RateLimiter`: a per-number send rate shared by every worker process.
* `Outbox`: records sends instead of making them (the testing kit).

See ``docs/replying.md``.
"""

from .client import AsyncClient, Client
from .endpoints import DIALOG360_BASE_URL, META_BASE_URL, META_VERSION, Credentials, Dialog360, Endpoint, Meta
from .errors import (
    RETRYABLE_CODES,
    ApiError,
    MessagingError,
    NotRetryable,
    RateLimited,
    TransportError,
    UnknownNumber,
    is_retryable,
)
from .idempotency import AsyncReplies, AsyncSender, AsyncSendLedger, Recorded, Replies, Sender, SendLedger
from .outbox import AsyncOutbox, Outbox, Read, Sent
from .ratelimit import DEFAULT_RATE, AsyncRateLimiter, RateLimiter
from .retry import Retry
from .types import (
    Component,
    ContactCard,
    ContactName,
    Content,
    Header,
    Language,
    ListRow,
    ListSection,
    MediaInfo,
    Parameter,
    ReplyButton,
    SendResult,
)

__all__ = [
    # Rate limits
    "DEFAULT_RATE",
    # Where and with which key
    "DIALOG360_BASE_URL",
    "META_BASE_URL",
    "META_VERSION",
    # Errors
    "RETRYABLE_CODES",
    "ApiError",
    # Clients
    "AsyncClient",
    # Testing
    "AsyncOutbox",
    "AsyncRateLimiter",
    # Replies from callbacks, once
    "AsyncReplies",
    "AsyncSendLedger",
    "AsyncSender",
    "Client",
    # Types most calls need (the rest: wa_middleware.messaging.types)
    "Component",
    "ContactCard",
    "ContactName",
    "Content",
    "Credentials",
    "Dialog360",
    "Endpoint",
    "Header",
    "Language",
    "ListRow",
    "ListSection",
    "MediaInfo",
    "MessagingError",
    "Meta",
    "NotRetryable",
    "Outbox",
    "Parameter",
    "RateLimited",
    "RateLimiter",
    "Read",
    "Recorded",
    "Replies",
    "ReplyButton",
    "Retry",
    "SendLedger",
    "SendResult",
    "Sender",
    "Sent",
    "TransportError",
    "UnknownNumber",
    "is_retryable",
]
