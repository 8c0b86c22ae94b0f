"""One error tree for the request path; each error maps to exactly one HTTP status."""

from __future__ import annotations


class WebhookError(Exception):
    """Base class of every error the library raises on purpose."""

    #: The HTTP status the request path answers with for this error.
    status: int = 500


class ConfigurationError(WebhookError, ValueError):
    """The `Webhook` or an adapter was configured wrongly; raised at start-up, never per request."""


class AuthError(WebhookError):
    """The delivery did not carry valid credentials."""

    status = 401


class VerificationFailed(WebhookError):
    """The subscription handshake (``GET ?hub.mode=subscribe``) had a wrong or missing verify token."""

    status = 403


class MethodNotAllowed(WebhookError):
    """The webhook path was called with a method it does not serve."""

    status = 405


class PayloadError(WebhookError):
    """The body is not a JSON object (or not a delivery the decoder can read)."""

    status = 400


class PayloadTooDeep(PayloadError):
    """The JSON body nests deeper than the decoder allows (msgspec's limit, about 1,000 levels)."""


class HeadersTooLarge(WebhookError):
    """The request headers add up to more than the cap: no real delivery comes close."""

    status = 431


class PayloadTooLarge(WebhookError):
    """The body is larger than the configured cap."""

    status = 413


class RequestTimeout(WebhookError):
    """The client took too long to send the body."""

    status = 408


class QueueUnavailable(WebhookError):
    """The broker did not acknowledge the write in time: the sender must retry later."""

    status = 503


class NoRetry(Exception):
    """Raise (``raise NoRetry("...") from exc``) in a callback whose failure will not get better by
    trying again (a 401 from an API, a record that no longer exists): the worker sends that one
    (event, callback) straight to the dead letters with this error, without its retries.

    Any exception with a ``retryable`` attribute that is ``False`` is treated the same way (the
    messaging client's API errors for 4xx answers other than 429 are).
    """

    retryable = False
