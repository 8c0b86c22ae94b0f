"""Authentication schemes for incoming deliveries.

Every comparison is constant-time (`hmac.compare_digest`) and every malformed header is
simply "not authenticated": a scheme never raises on bad input.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

__all__ = ["Auth", "BasicAuth", "NoAuth"]


@runtime_checkable
class Auth(Protocol):
    """What the core needs from an auth scheme.

    ``needs_body`` tells the adapters whether the scheme can decide from the headers alone
    (then the body is never read for a bad request) or must see the raw body (HMAC schemes).
    """

    needs_body: bool
    #: Value of ``WWW-Authenticate`` on a 401, or None to send none.
    challenge: str | None

    def verify(self, headers: Mapping[str, str], body: bytes | None) -> bool:
        """Return True if the request is authentic. ``headers`` has lower-case names."""
        ...


class BasicAuth:
    """HTTP Basic auth, the header 360dialog sends when the webhook is configured with
    ``{"headers": {"Authorization": "Basic base64(user:pass)"}}``.

    Several credentials may be accepted at once, so a password can be rotated without downtime::

        BasicAuth("user", "new-pass", also=[("user", "old-pass")])

    :param username: the expected user name.
    :param password: the expected password.
    :param also: further ``(username, password)`` pairs that are accepted too.
    :param realm: the realm named in the ``WWW-Authenticate`` challenge.
    """

    needs_body = False

    def __init__(
        self,
        username: str,
        password: str,
        *,
        also: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
        realm: str = "wa-middleware",
    ) -> None:
        pairs = [(username, password), *also]
        for user, pw in pairs:
            if not isinstance(user, str) or not isinstance(pw, str) or not user or not pw:
                raise ValueError("BasicAuth needs non-empty str username and password")
            if ":" in user:
                raise ValueError("a Basic auth username cannot contain ':'")
        self._secrets = [f"{user}:{pw}".encode() for user, pw in pairs]
        self.challenge: str | None = f'Basic realm="{realm}", charset="UTF-8"'

    @staticmethod
    def header_value(username: str, password: str) -> str:
        """The ``Authorization`` header value to configure on 360dialog's side."""
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

    def verify(self, headers: Mapping[str, str], body: bytes | None) -> bool:
        value = headers.get("authorization")
        if not value:
            return False
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        ok = False
        # No early exit: the time taken does not depend on which credential matched.
        for secret in self._secrets:
            ok |= hmac.compare_digest(given, secret)
        return ok

    def __repr__(self) -> str:
        return f"BasicAuth(<{len(self._secrets)} credential(s)>)"


class NoAuth:
    """Explicitly accept every delivery without authentication.

    The library refuses to start without an auth scheme; pass ``NoAuth()`` to opt out
    knowingly (local development, or a proxy in front that already authenticates).
    """

    needs_body = False
    challenge: str | None = None

    def verify(self, headers: Mapping[str, str], body: bytes | None) -> bool:
        return True

    def __repr__(self) -> str:
        return "NoAuth()"
