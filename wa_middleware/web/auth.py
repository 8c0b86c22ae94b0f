"""Authentication schemes for incoming deliveries.

Every comparison is constant-time (`hmac.compare_digest`) and every malformed header is
simply "not authenticated": a scheme never raises on bad input.

Schemes that can decide from the headers alone (`BasicAuth`, `HeaderAuth`) are checked before
the body is read. Signature schemes (`HubSignature256`, `Dialog360Signature`) need the raw body;
their ``precheck`` still refuses, before the body is read, a request whose signature header is
missing or malformed. `AllOf` and `AnyOf` combine schemes.

A well-formed signature header proves nothing until the body is in, so a request that only a
signature can authenticate (`authenticated_by_headers` is False) gets a tighter deadline for its
body than one a header credential already vouched for (see ``Core.signed_body_timeout``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

__all__ = [
    "AllOf",
    "AnyOf",
    "Auth",
    "BasicAuth",
    "Dialog360Signature",
    "HeaderAuth",
    "HmacSignature",
    "HubSignature256",
    "NoAuth",
    "authenticated_by_headers",
    "precheck",
]

#: RFC 9110 token characters, minus ``_``: 360dialog refuses underscores in header names, and
#: WSGI servers cannot tell ``X_Token`` from ``X-Token`` (both become ``HTTP_X_TOKEN``).
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^`|~-]+$")


@runtime_checkable
class Auth(Protocol):
    """What the core needs from an auth scheme.

    ``needs_body`` tells the adapters whether the scheme can decide from the headers alone
    (then the body is never read for a bad request) or must see the raw body (HMAC schemes).
    A body-needing scheme may also define ``precheck(headers) -> bool``, a cheap header-only
    test run before the body is read (see `precheck`), and ``by_headers(headers) -> bool``, True
    when the headers alone already authenticate the request (see `authenticated_by_headers`).
    """

    needs_body: bool
    #: Value of ``WWW-Authenticate`` on a 401, or None to send none.
    challenge: str | None

    def verify(self, headers: Mapping[str, str], body: bytes | None) -> bool:
        """Return True if the request is authentic. ``headers`` has lower-case names."""
        ...


def precheck(auth: Auth, headers: Mapping[str, str]) -> bool:
    """Header-only verdict, taken before the body is read: False means "401 now".

    A header-only scheme is verified fully; a body-needing one runs its own ``precheck`` when it
    has one (and passes otherwise, the final check being done on the body).
    """
    if not auth.needs_body:
        return auth.verify(headers, None)
    check = getattr(auth, "precheck", None)
    return bool(check(headers)) if check is not None else True


def authenticated_by_headers(auth: Auth, headers: Mapping[str, str]) -> bool:
    """True when the headers alone prove the request authentic, before any body byte is read.

    A header-only scheme (and `NoAuth`, which asks for nothing) says so by verifying; a signature
    scheme never can (a well-formed signature header costs an attacker nothing), and a combination
    asks its members (`AllOf`: every precheck passes and one header-only member verified;
    `AnyOf`: one member is authenticated by headers). A custom body-needing scheme counts as
    unauthenticated unless it defines ``by_headers``.
    """
    if not auth.needs_body:
        return auth.verify(headers, None)
    check = getattr(auth, "by_headers", None)
    return bool(check(headers)) if check is not None else False


def _secret_bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes) or not value:
        raise ValueError(f"{what} must be a non-empty str or bytes")
    return value


def _any_equal(given: bytes, secrets: Iterable[bytes]) -> bool:
    ok = False
    # No early exit: the time taken does not depend on which secret matched.
    for secret in secrets:
        ok |= hmac.compare_digest(given, secret)
    return ok


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
        also: Sequence[tuple[str, str]] = (),
        realm: str = "wa-middleware",
    ) -> None:
        pairs = [(username, password), *also]
        for user, pw in pairs:
            if not isinstance(user, str) or not isinstance(pw, str) or not user or not pw:
                raise ValueError("BasicAuth needs non-empty str username and password")
            if ":" in user:
                raise ValueError("a Basic auth username cannot contain ':'")
        self._secrets = [f"{user}:{pw}".encode() for user, pw in pairs]
        # The exact header values `header_value` gives the sender, which is what arrives nearly
        # always: compared whole first, with no decoding (the other spellings a client may send,
        # lower-case scheme, spaces, still pass through the full parse below).
        self._exact = [self.header_value(user, pw).encode("ascii") for user, pw in pairs]
        self.challenge: str | None = f'Basic realm="{realm}", charset="UTF-8"'

    @staticmethod
    def header_value(username: str, password: str) -> str:
        """The ``Authorization`` header value to configure on 360dialog's side."""
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

    def verify(self, headers: Mapping[str, str], body: bytes | None) -> bool:
        value = headers.get("authorization")
        if not value:
            return False
        if _any_equal(value.encode("latin-1", "replace"), self._exact):
            return True
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return _any_equal(given, self._secrets)

    def __repr__(self) -> str:
        return f"BasicAuth(<{len(self._secrets)} credential(s)>)"


class HeaderAuth:
    """A shared secret in a header of your choosing, e.g. 360dialog configured with
    ``{"headers": {"X-Webhook-Token": "..."}}``::

        HeaderAuth("X-Webhook-Token", "new-token", also=["old-token"])

    :param header: the header's name (case-insensitive; letters, digits and ``-``, no ``_``).
    :param token: the expected value, compared exactly (surrounding spaces are ignored).
    :param also: further accepted values, for rotation without downtime.
    """

    needs_body = False
    challenge: str | None = None

    def __init__(self, header: str, token: str, *, also: Sequence[str] = ()) -> None:
        if not isinstance(header, str) or not _HEADER_NAME.match(header):
            raise ValueError(f"invalid header name {header!r} (letters, digits and '-'; no '_')")
        self.header = header.lower()
        self._secrets = [_secret_bytes(t, "a HeaderAuth token") for t in (token, *also)]
        for secret in self._secrets:
            if secret != secret.strip() or b"\r" in secret or b"\n" in secret:
                raise ValueError("a HeaderAuth token cannot start or end with spaces or contain line breaks")

    def verify(self, headers: Mapping[str, str], body: bytes | None) -> bool:
        value = headers.get(self.header)
        if not value:
            return False
        # Header values arrive as latin-1 decoded text (ASGI bytes, WSGI environ); this gives back
        # the bytes that were sent, which UTF-8 secrets are compared with.
        return _any_equal(value.strip().encode("latin-1", "replace"), self._secrets)

    def __repr__(self) -> str:
        return f"HeaderAuth({self.header!r}, <{len(self._secrets)} token(s)>)"


class HmacSignature:
    """An HMAC-SHA256 of the raw body, hex-encoded in a header; the base of the two schemes below.

    :param secret: the key (several with ``also``, for rotation).
    :param header: the header carrying the signature.
    :param prefix_required: whether the value must start with ``sha256=`` (it is accepted either way
        when False).
    :param also: further accepted keys.
    """

    needs_body = True
    challenge: str | None = None
    _PREFIX = "sha256="

    def __init__(
        self,
        secret: str | bytes,
        *,
        header: str,
        prefix_required: bool = False,
        also: Sequence[str | bytes] = (),
    ) -> None:
        if not isinstance(header, str) or not _HEADER_NAME.match(header):
            raise ValueError(f"invalid header name {header!r} (letters, digits and '-'; no '_')")
        self.header = header.lower()
        self.prefix_required = prefix_required
        self._keys = [_secret_bytes(s, "a signature secret") for s in (secret, *also)]

    def _given(self, headers: Mapping[str, str]) -> bytes | None:
        """The 32 signature bytes the header carries, or None when absent or malformed."""
        value = headers.get(self.header)
        if not value:
            return None
        value = value.strip()
        if value[:7].lower() == self._PREFIX:
            value = value[7:]
        elif self.prefix_required:
            return None
        if len(value) != 64:
            return None
        try:
            return bytes.fromhex(value)  # case-insensitive; rejects anything but 64 hex digits
        except ValueError:
            return None

    def precheck(self, headers: Mapping[str, str]) -> bool:
        """The signature header is present and well-formed (the body is not read otherwise)."""
        return self._given(headers) is not None

    def sign(self, body: bytes) -> str:
        """The header value for ``body`` with the first key, ``sha256=<hex>`` (for tests and clients)."""
        return self._PREFIX + hmac.new(self._keys[0], body, hashlib.sha256).hexdigest()

    def verify(self, headers: Mapping[str, str], body: bytes | None) -> bool:
        given = self._given(headers)
        if given is None or body is None:
            return False
        return _any_equal(given, (hmac.new(key, body, hashlib.sha256).digest() for key in self._keys))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(header={self.header!r}, <{len(self._keys)} key(s)>)"


class HubSignature256(HmacSignature):
    """Meta's own signature, for apps connected to the Cloud API directly (360dialog does not
    relay it): ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``, keyed with the
    Meta app secret. Pair it with ``Webhook(verify_token=...)`` for the subscription handshake.

    :param app_secret: the app secret (App settings > Basic).
    :param also: further accepted secrets, for rotation.
    """

    def __init__(self, app_secret: str | bytes, *, also: Sequence[str | bytes] = ()) -> None:
        super().__init__(app_secret, header="X-Hub-Signature-256", prefix_required=True, also=also)


class Dialog360Signature(HmacSignature):
    """360dialog's ``x-360dialog-signature``: HMAC-SHA256 of the raw body keyed with the partner's
    platform secret, as hex with or without a ``sha256=`` prefix.

    :param secret: the partner secret.
    :param header: the header name, should 360dialog's differ for your channel.
    :param also: further accepted secrets, for rotation.
    """

    def __init__(
        self, secret: str | bytes, *, header: str = "x-360dialog-signature", also: Sequence[str | bytes] = ()
    ) -> None:
        super().__init__(secret, header=header, prefix_required=False, also=also)


class _Combined:
    _all: bool

    def __init__(self, *schemes: Auth) -> None:
        if not schemes:
            raise ValueError(f"{type(self).__name__} needs at least one scheme")
        for scheme in schemes:
            if not isinstance(scheme, Auth) or isinstance(scheme, NoAuth):
                raise ValueError(f"{type(self).__name__} takes auth schemes (not NoAuth), not {scheme!r}")
        self.schemes = schemes
        self.needs_body = any(s.needs_body for s in schemes)
        self.challenge: str | None = next((s.challenge for s in schemes if s.challenge), None)

    def _combine(self, verdicts: list[bool]) -> bool:
        # Every member is evaluated (no short-circuit) so the time does not tell which one failed.
        return all(verdicts) if self._all else any(verdicts)

    def precheck(self, headers: Mapping[str, str]) -> bool:
        return self._combine([precheck(s, headers) for s in self.schemes])

    def by_headers(self, headers: Mapping[str, str]) -> bool:
        vouched = [authenticated_by_headers(s, headers) for s in self.schemes]
        if self._all:
            # All must pass; one header credential that verified vouches for the request, the
            # others being at least well-formed (a signature is checked once the body is in).
            return any(vouched) and self.precheck(headers)
        return any(vouched)

    def verify(self, headers: Mapping[str, str], body: bytes | None) -> bool:
        return self._combine([s.verify(headers, body) for s in self.schemes])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.schemes))})"


class AllOf(_Combined):
    """Every scheme must accept, e.g. Basic auth *and* 360dialog's signature::

        AllOf(BasicAuth("user", "pass"), Dialog360Signature("partner-secret"))

    (``Webhook(auth=[...])`` with a list means the same.)
    """

    _all = True


class AnyOf(_Combined):
    """One scheme accepting is enough, e.g. while migrating from a header token to a signature."""

    _all = False


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
