"""The sans-IO half of the client: each API call as plain values, and what an answer means.

`Client` and `AsyncClient` only move these values through httpx and sleep between attempts, so the
two cannot drift apart on URLs, bodies, error decoding or the retry decision.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .endpoints import Endpoint
from .errors import ApiError
from .types import ErrorBody, MarkRead, MediaInfo, MessageRequest, SendResponse, SendResult, TypingIndicator, _Uploaded

__all__ = ["Call", "error_of", "parse_retry_after"]

_JSON = {"Content-Type": "application/json"}
_encode = msgspec.json.Encoder().encode
_decode_send = msgspec.json.Decoder(SendResponse).decode
# Meta has sent file_size both as a number and as a string of digits.
_decode_media = msgspec.json.Decoder(MediaInfo, strict=False).decode
_decode_uploaded = msgspec.json.Decoder(_Uploaded, strict=False).decode
_decode_any = msgspec.json.Decoder().decode
_SHOWN = 300


@dataclass(frozen=True, slots=True)
class Call:
    """One API call as plain values. Headers, body and files stay out of its ``repr`` (they hold the key).

    :ivar what: a short name for logs: ``send``, ``read``, ``upload``, ``media``, ``delete``, ``download``.
    :ivar sends: it sends a message: never re-sent once it may have reached the API.
    :ivar attempts: a cap on tries below the policy's, or None.
    :ivar limit_key: when set, the shared rate limit of that number is taken before each attempt.
    """

    what: str
    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    phone_number_id: str | None = None
    content: bytes | None = field(default=None, repr=False)
    data: Mapping[str, str] | None = field(default=None, repr=False)
    files: Mapping[str, tuple[str, bytes, str]] | None = field(default=None, repr=False)
    sends: bool = False
    attempts: int | None = None
    follow_redirects: bool = False
    limit_key: str | None = None


def send_call(endpoint: Endpoint, request: MessageRequest, *, limit_key: str | None) -> Call:
    return Call(
        what="send",
        method="POST",
        url=endpoint.messages_url(),
        headers={**_JSON, **endpoint.auth_headers()},
        phone_number_id=endpoint.phone_number_id,
        content=_encode(request),
        sends=True,
        limit_key=limit_key,
    )


def read_call(endpoint: Endpoint, message_id: str, *, typing: bool) -> Call:
    body = MarkRead(
        messaging_product="whatsapp",
        status="read",
        message_id=message_id,
        typing_indicator=TypingIndicator(type="text") if typing else None,
    )
    return Call(
        what="read",
        method="POST",
        url=endpoint.messages_url(),
        headers={**_JSON, **endpoint.auth_headers()},
        phone_number_id=endpoint.phone_number_id,
        content=_encode(body),
    )


def upload_call(endpoint: Endpoint, data: bytes, mime_type: str, filename: str, *, attempts: int) -> Call:
    return Call(
        what="upload",
        method="POST",
        url=endpoint.media_url(),
        headers=endpoint.auth_headers(),
        phone_number_id=endpoint.phone_number_id,
        data={"messaging_product": "whatsapp", "type": mime_type},
        files={"file": (filename, data, mime_type)},
        attempts=attempts,
    )


def media_call(endpoint: Endpoint, media_id: str, *, attempts: int, method: str = "GET") -> Call:
    return Call(
        what="media" if method == "GET" else "delete",
        method=method,
        url=endpoint.media_item_url(media_id),
        headers=endpoint.auth_headers(),
        phone_number_id=endpoint.phone_number_id,
        attempts=attempts,
    )


def download_call(endpoint: Endpoint, url: str, method: str, *, attempts: int) -> Call:
    return Call(
        what="download",
        method=method,
        url=endpoint.download_url(url),
        headers=endpoint.auth_headers(),
        phone_number_id=endpoint.phone_number_id,
        attempts=attempts,
        follow_redirects=endpoint.follows_download_redirects,
    )


def _undecodable(what: str, body: bytes) -> ApiError:
    # A 2xx whose body is not what the API documents: a proxy's page, a changed API. Retrying a
    # send would risk a duplicate, so it is not retryable: someone must look.
    error = ApiError(200, None, f"unexpected answer to {what}: {_text(body)}")
    error.retryable = False
    return error


def decode_send(body: bytes) -> SendResult:
    try:
        return SendResult.from_response(_decode_send(body))
    except (msgspec.DecodeError, ValueError):
        raise _undecodable("a send", body) from None


def decode_media(body: bytes) -> MediaInfo:
    try:
        return _decode_media(body)
    except msgspec.DecodeError:
        raise _undecodable("a media look-up", body) from None


def decode_uploaded(body: bytes) -> str:
    try:
        return _decode_uploaded(body).id
    except msgspec.DecodeError:
        raise _undecodable("an upload", body) from None


def _text(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def error_of(status: int, headers: Mapping[str, str], body: bytes, *, phone_number_id: str | None) -> ApiError:
    """The `ApiError` of an error answer, from Meta's ``{"error": {...}}`` or 360dialog's own shapes.

    360dialog answers errors of its own (a bad key, its rate limits) as ``{"error": "..."}``,
    ``{"meta": {"developer_message": ...}}`` or ``{"errors": [{"code", "title", "details"}]}``;
    anything else keeps the start of the raw body as the message.
    """
    retry_after = parse_retry_after(headers.get("retry-after"))
    code: int | None = None
    message = ""
    details: str | None = None
    subcode: int | None = None
    fbtrace_id: str | None = None
    raw: Any = None
    try:
        data = _decode_any(body) if body else None
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        meta = data.get("meta")
        errors = data.get("errors")
        if isinstance(error, dict):
            raw = error
            try:
                parsed = msgspec.convert(error, ErrorBody, strict=False)
            except msgspec.ValidationError:  # a field of an unexpected type: keep what can be read
                parsed = ErrorBody(message=str(error.get("message") or "") or None)
            code, subcode, fbtrace_id = parsed.code, parsed.error_subcode, parsed.fbtrace_id
            message = parsed.message or parsed.error_user_msg or ""
            extra = parsed.error_data.get("details") if parsed.error_data else None
            details = str(extra) if extra else None
        elif isinstance(error, str):
            raw, message = data, error
        elif isinstance(errors, list) and errors and isinstance(errors[0], dict):
            raw = errors
            first = errors[0]
            code = first.get("code") if isinstance(first.get("code"), int) else None
            message = str(first.get("title") or first.get("message") or "")
            details = str(first["details"]) if first.get("details") else None
        elif isinstance(meta, dict):
            raw = meta
            message = str(meta.get("developer_message") or "")
            found = meta.get("details")
            details = "; ".join(map(str, found)) if isinstance(found, list) else (str(found) if found else None)
        elif isinstance(data.get("message"), str):
            raw, message = data, data["message"]
    if not message:
        message = _text(body) or "(empty body)"
    return ApiError(
        status,
        code,
        message,
        details,
        subcode=subcode,
        fbtrace_id=fbtrace_id,
        retry_after=retry_after,
        phone_number_id=phone_number_id,
        raw=raw,
    )
