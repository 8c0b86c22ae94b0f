"""Where the Cloud API is called and with which secret: 360dialog's host or Meta's Graph API.

The two flavours differ only in URLs and one header:

=================  ==============================================  ===========================================
                   `Dialog360`                                     `Meta`
=================  ==============================================  ===========================================
send, mark read    ``POST {base}/messages``                        ``POST {base}/{version}/{number}/messages``
upload media       ``POST {base}/media``                           ``POST {base}/{version}/{number}/media``
look up media      ``GET {base}/{media id}``                       ``GET {base}/{version}/{media id}``
download media     Meta's URL's path and query on ``{base}``       Meta's URL itself
auth               ``D360-API-KEY: <key>`` (the key picks the      ``Authorization: Bearer <token>``
                   number)
=================  ==============================================  ===========================================

`Credentials` maps a business phone number id to its endpoint, from a mapping or a callable, so a
webhook serving several numbers replies from the number each event arrived on.

Secrets stay out of sight: no ``repr`` here shows a key or a token, and nothing here logs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from ..errors import ConfigurationError
from .errors import UnknownNumber

__all__ = ["DIALOG360_BASE_URL", "META_BASE_URL", "META_VERSION", "Credentials", "Dialog360", "Endpoint", "Meta"]

#: 360dialog's Cloud API host.
DIALOG360_BASE_URL = "https://waba-v2.360dialog.io"
#: Meta's Graph API host and the version this package was written against.
META_BASE_URL = "https://graph.facebook.com"
META_VERSION = "v21.0"


def _base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"base_url must be an http(s) URL, not {url!r}")
    return url.rstrip("/")


def _secret(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{what} must be a non-empty string")
    if any(c in value for c in "\r\n"):
        raise ConfigurationError(f"{what} must not contain a line break")


def _seg(value: str) -> str:
    # Ids come from webhooks and callers: never let one add a path segment or a query.
    return quote(value, safe="")


@dataclass(frozen=True)
class Endpoint:
    """Base class of the two flavours; see the module's table for what each method returns."""

    #: The business number this endpoint sends from, when known (always for `Meta`).
    phone_number_id: str | None

    def messages_url(self) -> str:
        raise NotImplementedError

    def media_url(self) -> str:
        raise NotImplementedError

    def media_item_url(self, media_id: str) -> str:
        raise NotImplementedError

    def download_url(self, url: str) -> str:
        raise NotImplementedError

    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    @property
    def download_methods(self) -> tuple[str, ...]:
        """The HTTP methods a media download tries, in order (the first that is not 405 wins)."""
        return ("GET",)

    @property
    def follows_download_redirects(self) -> bool:
        return False

    @property
    def limit_key(self) -> str:
        """What the shared rate limit counts this endpoint's sends under: its number."""
        return self.phone_number_id or ""


@dataclass(frozen=True, init=False)
class Dialog360(Endpoint):
    """360dialog's Cloud API: the channel's API key selects the number, so no number id is in the path.

    :param api_key: the channel's ``D360-API-KEY``.
    :param base_url: ``https://waba-v2.360dialog.io``; ``https://waba-sandbox.360dialog.io`` for the sandbox.
    :param phone_number_id: the number this key belongs to, when known: names it in errors and
        keys its rate limit (without it, the limit is keyed by a digest of the key).
    """

    api_key: str = field(repr=False)
    base_url: str = DIALOG360_BASE_URL

    def __init__(self, api_key: str, base_url: str = DIALOG360_BASE_URL, *, phone_number_id: str | None = None) -> None:
        _secret(api_key, "api_key")
        object.__setattr__(self, "api_key", api_key)
        object.__setattr__(self, "base_url", _base(base_url))
        object.__setattr__(self, "phone_number_id", phone_number_id)

    def messages_url(self) -> str:
        return f"{self.base_url}/messages"

    def media_url(self) -> str:
        return f"{self.base_url}/media"

    def media_item_url(self, media_id: str) -> str:
        return f"{self.base_url}/{_seg(media_id)}"

    def download_url(self, url: str) -> str:
        # 360dialog serves Meta's media URLs through its own host, authenticated by the channel key:
        # Meta's host would refuse a 360dialog key, and the key must never go to Meta's host.
        parts = urlsplit(url)
        return f"{self.base_url}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")

    def auth_headers(self) -> dict[str, str]:
        return {"D360-API-KEY": self.api_key}

    @property
    def download_methods(self) -> tuple[str, ...]:
        # 360dialog's guide lists POST for downloads, its API reference and public code use GET.
        return ("GET", "POST")

    @property
    def limit_key(self) -> str:
        if self.phone_number_id:
            return self.phone_number_id
        return "key-" + hashlib.blake2b(self.api_key.encode(), digest_size=8).hexdigest()


#: Hosts Meta serves media downloads from; the bearer token goes to no other (besides ``base_url``'s).
META_MEDIA_HOSTS = ("fbsbx.com", "facebook.com", "whatsapp.net", "fbcdn.net")


@dataclass(frozen=True, init=False)
class Meta(Endpoint):
    """Meta's Graph API, for numbers connected to Meta directly.

    :param token: a system user's access token (``Authorization: Bearer``).
    :param phone_number_id: the business number's id, part of every send's path.
    :param version: the Graph API version.
    :param base_url: ``https://graph.facebook.com``.
    """

    token: str = field(repr=False)
    version: str = META_VERSION
    base_url: str = META_BASE_URL

    def __init__(
        self, token: str, phone_number_id: str, version: str = META_VERSION, base_url: str = META_BASE_URL
    ) -> None:
        _secret(token, "token")
        if not isinstance(phone_number_id, str) or not phone_number_id:
            raise ConfigurationError("Meta needs the phone number id it sends from")
        object.__setattr__(self, "token", token)
        object.__setattr__(self, "phone_number_id", phone_number_id)
        object.__setattr__(self, "version", version.strip("/"))
        object.__setattr__(self, "base_url", _base(base_url))

    @property
    def _root(self) -> str:
        return f"{self.base_url}/{self.version}"

    def messages_url(self) -> str:
        return f"{self._root}/{_seg(self.phone_number_id or '')}/messages"

    def media_url(self) -> str:
        return f"{self._root}/{_seg(self.phone_number_id or '')}/media"

    def media_item_url(self, media_id: str) -> str:
        # With the number, Meta serves only media of that number.
        return f"{self._root}/{_seg(media_id)}?phone_number_id={_seg(self.phone_number_id or '')}"

    def download_url(self, url: str) -> str:
        host = (urlsplit(url).hostname or "").lower()
        own = (urlsplit(self.base_url).hostname or "").lower()
        if host != own and not any(host == h or host.endswith("." + h) for h in META_MEDIA_HOSTS):
            raise ValueError(f"refusing to send the access token to {host!r}: not a Meta media host")
        return url

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def follows_download_redirects(self) -> bool:
        # httpx drops Authorization on a redirect to another origin, so following is safe here.
        return True


#: What `Credentials` accepts for one number: an endpoint, or a bare string taken as a 360dialog key.
EndpointLike = Endpoint | str
#: What `Credentials` is built from.
CredentialsSource = EndpointLike | Mapping[str, EndpointLike] | Callable[[str], EndpointLike | None]


def _named(endpoint: Endpoint, phone_number_id: str) -> Endpoint:
    # A 360dialog key configured for a number names that number in errors and keys its rate limit.
    if isinstance(endpoint, Dialog360) and endpoint.phone_number_id is None:
        return Dialog360(endpoint.api_key, endpoint.base_url, phone_number_id=phone_number_id)
    return endpoint


class Credentials:
    """The endpoint (and so the key) of each business phone number id.

    :param source: one of

        * a mapping ``phone_number_id -> Endpoint | str`` (a string is a 360dialog API key),
          copied and checked here, once;
        * a callable ``phone_number_id -> Endpoint | str | None``, asked on every call (so keys
          may rotate; None means the number is unknown);
        * a single `Endpoint` or 360dialog key, used whatever the number (a `Meta` endpoint only
          for its own number).
    :param base_url: the 360dialog host for keys given as bare strings.
    """

    def __init__(self, source: CredentialsSource, *, base_url: str = DIALOG360_BASE_URL) -> None:
        self._base_url = _base(base_url)
        self._single: Endpoint | None = None
        self._mapping: dict[str, Endpoint] | None = None
        self._lookup: Callable[[str], EndpointLike | None] | None = None
        if isinstance(source, (Endpoint, str)):
            self._single = self._coerce(source)
        elif isinstance(source, Mapping):
            self._mapping = {}
            for number, value in source.items():
                if not isinstance(number, str) or not number:
                    raise ConfigurationError("the keys of api_keys must be phone number ids (strings)")
                endpoint = self._coerce(value)
                if isinstance(endpoint, Meta) and endpoint.phone_number_id != number:
                    raise ConfigurationError(f"the Meta endpoint under {number!r} sends from another number")
                self._mapping[number] = _named(endpoint, number)
        elif callable(source):
            self._lookup = source
        else:
            raise ConfigurationError("api_keys must be a mapping, a callable, an Endpoint or a 360dialog key")

    @classmethod
    def of(cls, value: Credentials | CredentialsSource) -> Credentials:
        """``value`` as `Credentials` (unchanged when it is one already)."""
        return value if isinstance(value, Credentials) else cls(value)

    def _coerce(self, value: object) -> Endpoint:
        if isinstance(value, Endpoint):
            return value
        if isinstance(value, str):
            return Dialog360(value, self._base_url)
        raise ConfigurationError(f"expected an Endpoint or a 360dialog API key, not {type(value).__name__}")

    def endpoint(self, phone_number_id: str | None = None) -> Endpoint:
        """The endpoint that sends from ``phone_number_id``.

        :raises UnknownNumber: no credentials for that number (not retryable).
        """
        if self._single is not None:
            single = self._single
            if phone_number_id and isinstance(single, Meta) and single.phone_number_id != phone_number_id:
                raise UnknownNumber(phone_number_id)
            return _named(single, phone_number_id) if phone_number_id else single
        if phone_number_id is None:
            raise UnknownNumber(None)
        if self._mapping is not None:
            found: Endpoint | None = self._mapping.get(phone_number_id)
        else:
            assert self._lookup is not None
            value = self._lookup(phone_number_id)
            found = None if value is None else self._coerce(value)
        if found is None:
            raise UnknownNumber(phone_number_id)
        return _named(found, phone_number_id)

    @property
    def numbers(self) -> frozenset[str] | None:
        """The configured numbers; None when they are not known in advance (a callable, a single key)."""
        return frozenset(self._mapping) if self._mapping is not None else None

    def __repr__(self) -> str:
        if self._single is not None:
            return f"Credentials({self._single!r})"
        if self._mapping is not None:
            return f"Credentials(numbers={sorted(self._mapping)!r})"
        return f"Credentials(lookup={getattr(self._lookup, '__qualname__', 'callable')})"
