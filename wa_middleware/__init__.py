"""Receive WhatsApp Business webhooks in any ASGI or WSGI app; run callbacks in dramatiq workers."""

from ._version import __version__
from .errors import (
    AuthError,
    ConfigurationError,
    NoRetry,
    PayloadError,
    PayloadTooLarge,
    QueueUnavailable,
    VerificationFailed,
    WebhookError,
)
from .events.callbacks import StopPropagation
from .events.decode import Event, decode_delivery
from .events.models import (
    Change,
    Contact,
    Error,
    EventContext,
    Message,
    Metadata,
    Status,
)
from .web.auth import AllOf, AnyOf, Auth, BasicAuth, Dialog360Signature, HeaderAuth, HubSignature256, NoAuth
from .webhook import Webhook

__all__ = [
    # Errors
    "AuthError",
    "ConfigurationError",
    "NoRetry",
    "PayloadError",
    "PayloadTooLarge",
    "QueueUnavailable",
    "VerificationFailed",
    "WebhookError",
    # Auth
    "AllOf",
    "AnyOf",
    "Auth",
    "BasicAuth",
    "Dialog360Signature",
    "HeaderAuth",
    "HubSignature256",
    "NoAuth",
    # Events
    "Change",
    "Contact",
    "Error",
    "Event",
    "EventContext",
    "Message",
    "Metadata",
    "Status",
    "decode_delivery",
    # The endpoint
    "StopPropagation",
    "Webhook",
    "__version__",
]
