"""A small client for 360dialog's webhook configuration API, on the standard library only.

Endpoints (see ``the README``): ``/v1/configs/webhook`` for a phone number's webhook,
``/waba_webhook`` for the WABA-wide one. Every call carries the channel's ``D360-API-KEY``.
Errors come in two shapes, the legacy ``{"meta": {"developer_message": ...}}`` and the newer
``{"error": ...}``; anything else is shown as the raw body. The API key never appears in a
message, a log line or an exception.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "ApiError",
    "Client",
    "ConnectionFailed",
    "Dialog360Error",
    "basic_auth_header",
    "describe_error",
]

logger = logging.getLogger("wa_middleware.dialog360")

#: 360dialog's Cloud API host.
DEFAULT_BASE_URL = "https://waba-v2.360dialog.io"

_MAX_SHOWN = 2000
_HINTS = {
    400: "the API refused the request as invalid",
    401: "the API key was refused: check it (generating a new key also removes the webhook)",
    403: "this API key may not do that",
    404: "no such endpoint on this host: check --base-url",
    429: "rate limited: wait and retry",
}


class Dialog360Error(Exception):
    """Base class of the client's errors."""


class ConnectionFailed(Dialog360Error):
    """No HTTP answer at all: DNS, refused connection, TLS failure or timeout."""


class ApiError(Dialog360Error):
    """360dialog answered with an error status.

    :ivar status: the HTTP status.
    :ivar message: the explanation extracted from the body (or the raw body).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"360dialog answered {status}: {message}")
        self.status = status
        self.message = message


def basic_auth_header(credentials: str) -> str:
    """``"user:pass"`` to the ``Authorization`` value 360dialog must send with each delivery."""
    user, sep, password = credentials.partition(":")
    if not sep or not user or not password:
        raise ValueError("expected USER:PASS with a non-empty user and password")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _text(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + f"... ({len(text)} characters)"


def describe_error(status: int, body: bytes) -> str:
    """One readable explanation of an error answer, from either error shape or the raw body."""
    detail = ""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        meta = data.get("meta")
        error = data.get("error")
        if isinstance(meta, dict) and (meta.get("developer_message") or meta.get("details")):
            detail = str(meta.get("developer_message") or "").strip()
            details = meta.get("details")
            if details:
                extra = "; ".join(str(d) for d in details) if isinstance(details, list) else str(details)
                detail = f"{detail} ({extra})" if detail else extra
        elif isinstance(error, str) and error:
            detail = error
        elif isinstance(error, dict):
            detail = str(error.get("message") or error.get("error_user_msg") or json.dumps(error))
        elif isinstance(data.get("message"), str):
            detail = data["message"]
    if not detail:
        detail = _text(body) or "(empty body)"
    hint = _HINTS.get(status) or ("a server-side error at 360dialog: retry later" if status >= 500 else "")
    return f"{detail} [{hint}]" if hint else detail


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Following a redirect would replay the API key to another host, and a POST would lose its body.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer as received."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes | None = None,
    timeout: float,
) -> RawResponse:
    """One HTTP exchange without following redirects; error statuses are returned, not raised.

    :raises ConnectionFailed: when no answer came (the message never contains header values).
    """
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=timeout) as answer:
            return RawResponse(answer.status, dict(answer.headers.items()), answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return RawResponse(exc.code, dict(exc.headers.items()) if exc.headers else {}, exc.read())
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise ConnectionFailed(f"no answer from {url}: {reason}") from None


class Client:
    """360dialog's webhook configuration endpoints.

    :param api_key: the channel's API key (``D360-API-KEY``).
    :param base_url: the API host, e.g. `DEFAULT_BASE_URL` or the sandbox.
    :param timeout: seconds for connecting and for each read.
    """

    def __init__(self, api_key: str, *, base_url: str = DEFAULT_BASE_URL, timeout: float = 15.0) -> None:
        if not api_key:
            raise ValueError("an API key is required")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, api_key=<hidden>)"

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        headers = {
            "D360-API-KEY": self._api_key,
            "Accept": "application/json",
            "User-Agent": f"wa-middleware/{__version__}",
        }
        body = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(payload).encode()
        url = self.base_url + path
        logger.info("360dialog call: method=%s path=%s", method, path)
        answer = http_request(method, url, headers=headers, body=body, timeout=self.timeout)
        logger.info("360dialog answer: method=%s path=%s status=%d", method, path, answer.status)
        if not 200 <= answer.status < 300:
            raise ApiError(answer.status, self._scrub(describe_error(answer.status, answer.body)))
        if not answer.body.strip():
            return {}
        try:
            return json.loads(answer.body)
        except ValueError:
            return self._scrub(_text(answer.body))

    def _scrub(self, text: str) -> str:
        # Should the API ever echo the key back, it still never reaches the terminal.
        return text.replace(self._api_key, "<api key>")

    def get_webhook(self) -> Any:
        """The phone number's webhook: ``{"url": ..., "headers": ...}``."""
        return self._call("GET", "/v1/configs/webhook")

    def set_webhook(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        """Set the phone number's webhook (recommended over the WABA one)."""
        return self._call("POST", "/v1/configs/webhook", {"url": url, "headers": dict(headers or {})})

    def get_waba_webhook(self) -> Any:
        """The WABA-level webhook: ``url``, ``headers``, ``waba_id``, ``numbers_on_this_waba``."""
        return self._call("GET", "/waba_webhook")

    def set_waba_webhook(
        self, url: str, headers: Mapping[str, str] | None = None, *, override_all: bool = False
    ) -> Any:
        """Set the WABA-level webhook; ``override_all`` also replaces the numbers' own webhooks.

        360dialog applies it asynchronously (seen taking 15-20 s): confirm with `get_waba_webhook`.
        """
        payload = {"url": url, "headers": dict(headers or {}), "override_all": override_all}
        return self._call("POST", "/waba_webhook", payload)
