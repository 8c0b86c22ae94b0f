"""The errors of sending, and the one attribute that tells a worker whether a retry can help.

The retry protocol
------------------
Every error raised here carries ``retryable: bool``. The worker wing may not import this module
(the dependency rules keep ``worker`` below ``messaging``), so it reads the attribute by duck
typing, which also lets user code take part::

    retryable = getattr(exc, "retryable", True)

``False`` means running the callback again would fail the same way (a 400 for a malformed
template, a 401 for a revoked key, a recipient outside the 24-hour window): the unit goes straight
to the dead letters with this error instead of spending its retries. Anything without the
attribute keeps the default, retryable, behaviour. User code can raise `NotRetryable` (or a
subclass) for its own permanent failures, or set ``retryable`` on any exception it raises.

What counts as retryable, in one place (`ApiError.retryable`):

===========================================  =========  ======================================
answer                                       retryable  why
===========================================  =========  ======================================
HTTP 429, any 5xx                            yes        throttled or a server-side fault
Meta code in `RETRYABLE_CODES`, any status   yes        Meta reports throttling and transient
                                                        faults with a 400 as well
any other 4xx                                no         the request itself is wrong
no answer at all (`TransportError`)          yes        but see ``maybe_sent``
===========================================  =========  ======================================

Keys never appear in these errors: their messages hold the status, Meta's code and message, and
the phone number id, never a header.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RETRYABLE_CODES",
    "ApiError",
    "MessagingError",
    "NotRetryable",
    "RateLimited",
    "TransportError",
    "UnknownNumber",
    "is_retryable",
]

#: Meta error codes that mean "later", whatever the HTTP status: 1 and 2 (API unknown error /
#: service temporarily unavailable), 4 (app-level call rate), 80007 (WABA rate limit), 130429
#: (throughput reached), 131000 (something went wrong), 131016 (service unavailable) and 131056
#: (too many messages to one user in a short time).
RETRYABLE_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131056})


class MessagingError(Exception):
    """Base class of the errors of `wa_middleware.messaging`.

    :ivar retryable: whether running the callback again may succeed (see the module's docstring).
    """

    retryable: bool = True

    def __reduce__(self) -> tuple[Any, ...]:
        # The subclasses take keyword-only arguments, which Exception's own pickling drops.
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(cls: type[MessagingError], args: tuple[Any, ...], state: dict[str, Any]) -> MessagingError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class NotRetryable(Exception):
    """Raise (or subclass) in a callback for a failure no retry can fix: it is dead-lettered at once."""

    retryable = False


class ApiError(MessagingError):
    """The API answered with an error status.

    :ivar status: the HTTP status.
    :ivar code: Meta's error code (``error.code``), None when the body had none (a 502 from a proxy).
    :ivar message: Meta's ``error.message``, or the start of the raw body.
    :ivar details: ``error.error_data.details`` (often the useful part), or None.
    :ivar subcode: ``error.error_subcode``, or None.
    :ivar fbtrace_id: the id Meta's support asks for, or None.
    :ivar retry_after: seconds the answer's ``Retry-After`` asked to wait, or None.
    :ivar retryable: True for 429, 5xx and `RETRYABLE_CODES`; False otherwise.
    :ivar phone_number_id: the business number the call was made for, when known.
    """

    def __init__(
        self,
        status: int,
        code: int | None,
        message: str,
        details: str | None = None,
        *,
        subcode: int | None = None,
        fbtrace_id: str | None = None,
        retry_after: float | None = None,
        phone_number_id: str | None = None,
        raw: Any = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id
        self.retry_after = retry_after
        self.phone_number_id = phone_number_id
        #: The decoded error body, as sent (Meta's ``error`` object), for what the fields above omit.
        self.raw = raw
        self.retryable = status == 429 or status >= 500 or (code is not None and code in RETRYABLE_CODES)
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [f"HTTP {self.status}"]
        if self.code is not None:
            parts.append(f"code {self.code}" + (f"/{self.subcode}" if self.subcode is not None else ""))
        text = self.message + (f" ({self.details})" if self.details and self.details != self.message else "")
        where = f" [number {self.phone_number_id}]" if self.phone_number_id else ""
        return f"{', '.join(parts)}: {text}{where}"


class TransportError(MessagingError):
    """No answer came: the connection failed, timed out or broke.

    :ivar maybe_sent: True when the request may have reached the API before the failure (a read
        timeout, a dropped connection). The client never retries such a send itself, because the
        message may have gone out; the worker's retry of the callback re-sends it (the ledger has
        no answer to return), which is the window `wa_middleware.messaging.idempotency` documents.
    """

    def __init__(self, message: str, *, maybe_sent: bool) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class RateLimited(MessagingError):
    """The shared per-number rate limit would make this send wait longer than its time budget.

    :ivar retry_after: seconds until a slot would have been free.
    """

    def __init__(self, phone_number_id: str, retry_after: float) -> None:
        super().__init__(f"rate limit of number {phone_number_id}: next slot in {retry_after:.3f}s, past the budget")
        self.phone_number_id = phone_number_id
        self.retry_after = retry_after


class UnknownNumber(MessagingError, LookupError):
    """No credentials are configured for this phone number id: no retry will find some."""

    retryable = False

    def __init__(self, phone_number_id: str | None) -> None:
        super().__init__(f"no API key configured for phone number id {phone_number_id!r}")
        self.phone_number_id = phone_number_id


def is_retryable(exc: BaseException) -> bool:
    """The retry protocol in one function: False only when ``exc.retryable`` is False."""
    return getattr(exc, "retryable", True) is not False
