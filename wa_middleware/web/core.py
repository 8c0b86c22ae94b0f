"""The sans-IO request core shared by the ASGI and WSGI adapters.

The adapters move bytes; every decision (path, method, auth, size cap, JSON check, status
codes, the message handed to the queue) is taken here, so the two adapters cannot drift.
The flow an adapter follows::

    if not core.matches(path): pass through to the wrapped app
    response = core.start(method, headers, content_length, query)  # 405 / 401 / 413 / handshake, or None
    ... read at most core.max_body_size bytes ...            # core.too_large() past the cap
    ... within core.body_timeout_for(headers) s in all ...   # core.reject(RequestTimeout()) otherwise
    job = core.finish(headers, body)                         # raises WebhookError -> core.reject(exc)
    ... enqueue job.data under job.message_id, bounded by core.enqueue_timeout ...
    return core.accepted(job)                                # or core.reject(QueueUnavailable())
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import msgspec

from ..errors import (
    AuthError,
    HeadersTooLarge,
    MethodNotAllowed,
    PayloadError,
    PayloadTooDeep,
    PayloadTooLarge,
    QueueUnavailable,
    RequestTimeout,
    VerificationFailed,
    WebhookError,
)
from .auth import Auth, authenticated_by_headers, precheck

#: Header bytes (names and values) accepted at most: 360dialog sends a handful of short headers.
MAX_HEADER_BYTES = 32 * 1024
#: Seconds the body of a request nothing has authenticated yet (a signature scheme's) may take at
#: most. A delivery's body follows its headers at once and is a few KB: the sender's 5 s are for the
#: whole exchange, so a body still missing after 3 s is an attacker holding a worker, not a delivery.
SIGNED_BODY_TIMEOUT = 3.0

__all__ = ["REASONS", "Core", "Job", "Response", "parse_content_length"]

#: Reason phrases of the statuses the core answers with.
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}

logger = logging.getLogger("wa_middleware.request")


@dataclass(frozen=True)
class Response:
    """A complete HTTP answer: status, headers (``str`` pairs) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: The same headers as ASGI wants them, computed once since responses are constants.
    raw_headers: list[tuple[bytes, bytes]] = field(init=False, repr=False, compare=False)
    #: The status line and headers as WSGI wants them, once too: PEP 3333 forbids hop-by-hop headers
    #: from the application (wsgiref asserts on them), so ``connection`` is left to the server.
    wsgi_status: str = field(init=False, repr=False, compare=False)
    wsgi_headers: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        object.__setattr__(self, "raw_headers", raw)
        object.__setattr__(self, "wsgi_status", f"{self.status} {REASONS.get(self.status, '')}".rstrip())
        object.__setattr__(self, "wsgi_headers", tuple((k, v) for k, v in self.headers if k != "connection"))


@dataclass(frozen=True, slots=True)
class Job:
    """What the adapter hands to the queue: one dramatiq message carrying the whole delivery."""

    message_id: str
    data: bytes


#: One validity rule for both sides: what this decoder accepts (one JSON object, every number one
#: msgspec can hold), the worker can decode. A full decode, not a skipping one: skipping does not read
#: numbers, and a number past a double's range (``1e999``) fails every later decode, so a delivery
#: holding one would be stored and then never run. Measured on the benchmark's 1.5 KB deliveries,
#: the full decode (7 us) costs less than the skipping decode plus a regular-expression search for
#: such numbers did (1 + 55 us), and stays linear on hostile bodies, where that search was not
#: (0.2 s for 200 KB of digits).
_object_decoder = msgspec.json.Decoder(dict)
_encode = msgspec.msgpack.Encoder().encode


def _uuid4() -> str:
    """``str(uuid.uuid4())``, the form dramatiq gives message ids, in a third of its time (1.6 us
    against 4.8: no UUID object on the request path): 16 random bytes as hex, with the version
    nibble set to 4 and the variant bits to 10."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def parse_content_length(value: str | None) -> int | None:
    """``Content-Length`` as the core wants it: None when absent, -1 when not a plain decimal number.

    Only ASCII digits count (``str.isdigit`` also accepts ``"²"``, which ``int`` then refuses).
    """
    if value is None or value == "":
        return None
    return int(value) if value.isascii() and value.isdigit() else -1


def _json_response(status: int, payload: dict[str, object], extra: tuple[tuple[str, str], ...] = ()) -> Response:
    body = msgspec.json.encode(payload)
    headers = (("content-type", "application/json"), ("content-length", str(len(body))), *extra)
    return Response(status, headers, body)


class Core:
    """Policy of the webhook endpoint, free of any I/O.

    :param path: the exact path served (other paths pass through).
    :param auth: the auth scheme.
    :param max_body_size: body cap in bytes (413 above it).
    :param queue_name: dramatiq queue the deliveries go to.
    :param actor_name: dramatiq actor that decodes and dispatches a delivery.
    :param enqueue_timeout: seconds the broker has to acknowledge a write.
    :param retry_after: seconds advertised in ``Retry-After`` on a 503.
    :param body_timeout: seconds the client has to send the whole body (408 after that).
    :param signed_body_timeout: the same, at most, for a request that no header credential has
        authenticated (a signature scheme's, whose check needs the body): a client without any
        secret can otherwise hold a worker for ``body_timeout`` per connection.
    :param verify_token: when set, ``GET path?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...``
        (Meta's subscription handshake) is answered with the challenge; without it GET is a 405.
    """

    def __init__(
        self,
        *,
        path: str,
        auth: Auth,
        max_body_size: int,
        queue_name: str,
        actor_name: str,
        enqueue_timeout: float,
        retry_after: int = 5,
        body_timeout: float = 10.0,
        verify_token: str | None = None,
        signed_body_timeout: float = SIGNED_BODY_TIMEOUT,
    ) -> None:
        self.path = path
        self.auth = auth
        self.max_body_size = max_body_size
        self.queue_name = queue_name
        self.actor_name = actor_name
        self.enqueue_timeout = enqueue_timeout
        self.body_timeout = body_timeout
        self.signed_body_timeout = min(body_timeout, signed_body_timeout)
        # Decided once when the scheme tells from its type: header-only schemes were verified before
        # the body (full deadline); a plain signature never vouches (tight). Combinations ask per request.
        self._fixed_body_timeout: float | None = None
        if not auth.needs_body:
            self._fixed_body_timeout = body_timeout
        elif getattr(auth, "by_headers", None) is None:
            self._fixed_body_timeout = self.signed_body_timeout
        self._verify_token = verify_token.encode() if verify_token else None
        allow = "GET, POST" if verify_token else "POST"

        challenge = (("www-authenticate", auth.challenge),) if auth.challenge else ()
        self._ok = _json_response(200, {"status": "stored"})
        # One table: each error class names its status (errors.py), and says here what to tell the client.
        close = (("connection", "close"),)
        answers: dict[type[WebhookError], tuple[str, tuple[tuple[str, str], ...]]] = {
            AuthError: ("unauthorized", challenge),
            MethodNotAllowed: ("method not allowed", (("allow", allow),)),
            VerificationFailed: ("verification failed", ()),
            HeadersTooLarge: ("request headers too large", close),
            PayloadError: ("body is not a JSON object", ()),
            # The unread rest of the body makes the connection unusable: close it.
            PayloadTooLarge: (f"body larger than {max_body_size} bytes", close),
            RequestTimeout: ("body not received in time", close),
            QueueUnavailable: ("queue unavailable, retry later", (("retry-after", str(retry_after)),)),
        }
        self._responses: dict[type[WebhookError], Response] = {
            cls: _json_response(cls.status, {"error": message}, extra) for cls, (message, extra) in answers.items()
        }

    def matches(self, path: str) -> bool:
        """True when this request is ours; anything else goes to the wrapped app untouched."""
        return path == self.path

    def start(
        self, method: str, headers: Mapping[str, str], content_length: int | None, query: str = ""
    ) -> Response | None:
        """Decide what can be decided before the body is read; None means "read the body".

        :param headers: request headers with lower-case names; repeated headers joined with ``,``.
        :param content_length: the parsed ``Content-Length``, or None when absent; -1 when invalid.
        :param query: the raw query string (for the GET handshake).
        """
        if method != "POST":
            if method == "GET" and self._verify_token is not None:
                return self.handshake(query)
            return self.reject(MethodNotAllowed())
        # Some servers (uvicorn with httptools) set no limit of their own on header size.
        if sum(map(len, headers)) + sum(map(len, headers.values())) > MAX_HEADER_BYTES:
            return self.reject(HeadersTooLarge())
        # Header-only schemes decide here; signature schemes refuse a missing or malformed signature
        # here too, so an unauthenticated client cannot make us read a body.
        if not precheck(self.auth, headers):
            return self.reject(AuthError())
        if content_length is not None:
            if content_length < 0:
                return self.reject(PayloadError("invalid Content-Length"))
            if content_length > self.max_body_size:
                return self.reject(PayloadTooLarge())
        return None

    def body_timeout_for(self, headers: Mapping[str, str]) -> float:
        """Seconds the body of this request (``start`` returned None) may take in all.

        ``body_timeout`` when a header credential already authenticated the request, else
        ``signed_body_timeout``: the signature is all it has, and it cannot be checked before the body.
        """
        if self._fixed_body_timeout is not None:
            return self._fixed_body_timeout
        return self.body_timeout if authenticated_by_headers(self.auth, headers) else self.signed_body_timeout

    def too_large(self) -> Response:
        """The answer when the body grew past the cap while being read."""
        return self.reject(PayloadTooLarge())

    def finish(self, headers: Mapping[str, str], body: bytes) -> Job:
        """Check the complete body and build the queue message; raises a `WebhookError`."""
        if self.auth.needs_body and not self.auth.verify(headers, body):
            raise AuthError()
        try:
            _object_decoder.decode(body)
        except msgspec.DecodeError:
            raise PayloadError() from None
        except RecursionError:
            # msgspec stops descending at about 1,000 levels, cheaply and before building anything;
            # a real delivery nests fewer than 10. A 400, not a crash (that would be a 503, retried for days).
            raise PayloadTooDeep() from None
        message_id = _uuid4()
        now = int(time.time() * 1000)
        # The exact shape of dramatiq's Message.asdict(), so a stock dramatiq worker consumes it.
        data = _encode(
            {
                "queue_name": self.queue_name,
                "actor_name": self.actor_name,
                "args": [body, now, message_id],
                "kwargs": {},
                "options": {"redis_message_id": message_id},
                "message_id": message_id,
                "message_timestamp": now,
            }
        )
        return Job(message_id, data)

    def handshake(self, query: str) -> Response:
        """Meta's subscription check: echo ``hub.challenge`` when ``hub.verify_token`` matches, else 403."""
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=16, strict_parsing=False)
        except ValueError:
            return self.reject(VerificationFailed())
        mode = params.get("hub.mode", [])
        token = params.get("hub.verify_token", [])
        challenge = params.get("hub.challenge", [])
        if len(mode) != 1 or len(token) != 1 or len(challenge) != 1:
            return self.reject(VerificationFailed())
        expected = self._verify_token or b""
        token_ok = hmac.compare_digest(token[0].encode("utf-8", "replace"), expected)
        value = challenge[0]
        # Meta's challenge is a number; anything odd is refused rather than echoed back.
        sane = 0 < len(value) <= 256 and value.isascii() and value.isprintable()
        if not (token_ok and mode[0] == "subscribe" and sane):
            return self.reject(VerificationFailed())
        body = value.encode("ascii")
        headers = (
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
            ("x-content-type-options", "nosniff"),
            ("cache-control", "no-store"),
        )
        return Response(200, headers, body)

    def accepted(self, job: Job) -> Response:
        """The 200, to be sent only once the broker acknowledged ``job``."""
        if logger.isEnabledFor(logging.INFO):  # (no record, no extra dict, when nobody listens)
            logger.info("webhook accepted", extra={"status": 200, "message_id": job.message_id})
        return self._ok

    def reject(self, exc: WebhookError) -> Response:
        """Map an error to its one response, and log why without secrets or body."""
        response = self._responses.get(type(exc))
        if response is None:
            for cls, candidate in self._responses.items():
                if isinstance(exc, cls):
                    response = candidate
                    break
            else:
                response = self._responses[QueueUnavailable]
        logger.warning(
            "webhook rejected: status=%d reason=%s",
            response.status,
            type(exc).__name__,
            extra={"status": response.status, "reason": type(exc).__name__},
        )
        return response

    def internal_error(self, exc: BaseException) -> Response:
        """Last resort for a bug: a 503 so the sender redelivers later; never a 200, never a traceback."""
        logger.error("webhook internal error: %s", type(exc).__name__, exc_info=exc)
        return self._responses[QueueUnavailable]
