"""Redis clients from a broker URL: the one place that reads one.

Every process and tool (the web enqueuers, the worker's broker, health, metrics, dead letters,
replay, the embedded server's checks) builds its clients here, so a URL means the same thing to
all of them, and a mistake in it is found when the `Webhook` is built, not at the first request.

The forms (``docs/deploying.md`` explains each, with examples)::

    redis://[[user]:password@]host[:port][/db][?option=value&...]
    rediss://...                         the same over TLS
    unix://[[user]:password@]/path/to/socket[?db=N&...]
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?...]
    rediss+sentinel://...                TLS to the sentinels and to the servers

The credentials are those of the Redis servers (an ACL user, or only a password for ``default``);
sentinels that want their own take ``sentinel_username`` / ``sentinel_password`` options. The
options a URL may carry are the keys of `OPTIONS` (and of `SENTINEL_OPTIONS` for Sentinel): what a
caller passes in code (timeouts, retries, pool size) is each caller's own bound and is not a URL
option, so no URL can lift the request path's time budget.

A client built here treats a ``READONLY`` reply as a lost connection (it disconnects and raises
`redis.ConnectionError`): the server it reached was demoted to a replica by a failover. The web
side then answers 503 and its next write connects again (through Sentinel: to the new primary;
through a name or address that moved: to whatever it now points at); the workers wait it out as
they wait out any lost connection. redis-py's Sentinel pools do the same on their own.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, quote, unquote

import redis
import redis.asyncio as aredis
import redis.asyncio.connection as aconnection
import redis.asyncio.sentinel as asentinel
import redis.connection
import redis.sentinel

from .errors import ConfigurationError

__all__ = [
    "OPTIONS",
    "SENTINEL_OPTIONS",
    "BrokerAddress",
    "async_client",
    "parse",
    "permanent_error",
    "redact",
    "sync_client",
]

#: Port of a sentinel given without one.
SENTINEL_PORT = 26379

#: Seconds a sentinel has to answer when the caller gave no timeout (the worker gives none): a
#: sentinel that hangs is skipped for the next one rather than hanging the discovery.
SENTINEL_TIMEOUT = 1.0

#: What a failover makes a connection to the old primary answer.
DEMOTED = "the server is a read-only replica now (a failover demoted it): reconnecting"


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _cert_reqs(value: str) -> str:
    if value.lower() not in ("none", "optional", "required"):
        raise ValueError(value)
    return value.lower()


#: Query options of every URL form -> how its value is read. The ``ssl_*`` ones are redis-py's
#: own TLS parameters (``ssl_cert_reqs=none`` skips verifying the server: for tests only).
OPTIONS: dict[str, Callable[[str], Any]] = {
    "db": int,
    "client_name": str,
    "health_check_interval": int,
    "socket_keepalive": _flag,
    "ssl_ca_certs": str,
    "ssl_ca_path": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": _cert_reqs,
    "ssl_check_hostname": _flag,
}

#: Query options of the Sentinel forms only: the sentinels' own credentials.
SENTINEL_OPTIONS: dict[str, Callable[[str], Any]] = {"sentinel_username": str, "sentinel_password": str}

_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")


@dataclass(frozen=True)
class BrokerAddress:
    """A parsed broker URL.

    :ivar scheme: one of the five forms.
    :ivar connection: keyword arguments of the connections to the Redis server(s) (host, port or
        path, db, credentials, TLS options).
    :ivar sentinels: ``(host, port)`` of each sentinel (the Sentinel forms only).
    :ivar service: the name the sentinels monitor the primary under (the Sentinel forms only).
    :ivar sentinel: keyword arguments of the connections to the sentinels.
    """

    scheme: str
    connection: dict[str, Any]
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    sentinel: dict[str, Any] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")


def _split(rest: str) -> tuple[str | None, str, str, str]:
    """The userinfo (None: none given), hosts, path (with its leading ``/``) and query of what follows
    ``scheme://``. The userinfo ends at the last ``@`` before the query, so a password holding an
    unencoded ``/`` or ``@`` is still read (and redacted) as one."""
    main, _, query = rest.partition("?")
    userinfo, at, after = main.rpartition("@")
    hosts, slash, path = after.partition("/")
    return (userinfo if at else None), hosts, slash + path, query


def redact(url: str) -> str:
    """``url`` with its password (and a sentinel password option) replaced by ``***``: safe to log."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, hosts, path, query = _split(rest)
    user = ""
    if userinfo is not None:
        name, colon, _ = userinfo.partition(":")
        user = f"{name}:***@" if colon else f"{name}@"
    if query:
        query = "?" + "&".join(
            f"{k}=***" if k == "sentinel_password" else f"{k}={quote(v, safe='/')}"
            for k, v in parse_qsl(query, keep_blank_values=True)
        )
    return f"{scheme}://{user}{hosts}{path}{query}"


def _fail(url: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"broker URL {redact(url)}: {why}")


def parse(url: str) -> BrokerAddress:
    """Read a broker URL (the forms are in this module's docstring).

    :raises ConfigurationError: naming what is wrong; the message never holds the password.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise _fail(url, f"the scheme must be one of {', '.join(s + '://' for s in _SCHEMES)}")
    sentinel = scheme.endswith("+sentinel")
    # urlsplit cannot read a list of hosts: the URL is taken apart by hand.
    userinfo, hosts, path, query = _split(url[len(scheme) + 3 :])
    connection: dict[str, Any] = {}
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        if user:
            connection["username"] = unquote(user)
        if colon:
            connection["password"] = unquote(password)
    options = _options(url, query, tls=scheme.startswith("rediss"), sentinel=sentinel)
    sentinel_auth = {k.removeprefix("sentinel_"): options.pop(k) for k in list(options) if k in SENTINEL_OPTIONS}
    if scheme == "unix":
        if hosts or not path.strip("/"):
            raise _fail(url, "a unix URL is unix://[user:password@]/path/to/socket")
        connection["path"] = unquote(path)
        connection.update(options)
        return BrokerAddress(scheme, connection)
    segments = [unquote(s) for s in path.split("/") if s]
    if sentinel:
        if not segments:
            raise _fail(url, "name the monitored service: redis+sentinel://host:26379/<service>[/<db>]")
        service, segments = segments[0], segments[1:]
    if len(segments) > 1:
        raise _fail(url, "the path holds only the database number")
    if segments:
        try:
            connection["db"] = int(segments[0])
        except ValueError:
            raise _fail(url, f"the database must be a number, not {segments[0]!r}") from None
    connection.update(options)
    if not sentinel:
        host, port = _host(url, hosts, 6379)
        connection.update(host=host, port=port)
        return BrokerAddress(scheme, connection)
    sentinels = tuple(_host(url, h, SENTINEL_PORT) for h in hosts.split(","))
    tls = {k: v for k, v in connection.items() if k.startswith("ssl_")}
    return BrokerAddress(scheme, connection, sentinels, service, {**sentinel_auth, **tls})


def _options(url: str, query: str, *, tls: bool, sentinel: bool) -> dict[str, Any]:
    allowed = {**OPTIONS, **SENTINEL_OPTIONS} if sentinel else OPTIONS
    out: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        reader = allowed.get(name)
        if reader is None:
            raise _fail(url, f"unknown option {name!r} (known: {', '.join(sorted(allowed))})")
        if name.startswith("ssl_") and not tls:
            raise _fail(url, f"{name} needs TLS: rediss://")
        try:
            out[name] = reader(value)
        except ValueError:
            shown = "***" if name == "sentinel_password" else repr(value)
            raise _fail(url, f"{name}={shown} is not a valid value") from None
    if out.get("ssl_cert_reqs") == "none":
        out.setdefault("ssl_check_hostname", False)  # nothing verified: there is no name to check either
    return out


def _host(url: str, text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise _fail(url, f"no host in {text!r}")
    try:
        return unquote(host), int(port) if port else default_port
    except ValueError:
        raise _fail(url, f"the port must be a number, not {port!r}") from None


# -- clients ---------------------------------------------------------------------------------------


class _Demoted(redis.connection.AbstractConnection):
    """A connection that takes a READONLY reply for what it is: the primary it reached is gone."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ReadOnlyError:
            self.disconnect()  # type: ignore[no-untyped-call,unused-ignore]
            raise redis.ConnectionError(DEMOTED) from None


class _TCP(_Demoted, redis.Connection):
    pass


class _TLS(_Demoted, redis.SSLConnection):
    pass


class _Unix(_Demoted, redis.UnixDomainSocketConnection):
    pass


class _AsyncDemoted(aconnection.AbstractConnection):
    """`_Demoted` for redis.asyncio."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except redis.ReadOnlyError:
            await self.disconnect()
            raise redis.ConnectionError(DEMOTED) from None


class _AsyncTCP(_AsyncDemoted, aconnection.Connection):
    pass


class _AsyncTLS(_AsyncDemoted, aconnection.SSLConnection):
    pass


class _AsyncUnix(_AsyncDemoted, aconnection.UnixDomainSocketConnection):
    pass


class _SentinelConnection(redis.sentinel.SentinelManagedConnection):
    """A connection to the primary the sentinels name, even when used on its own: redis-py connects
    one that is written to before it was connected (``pool.make_connection()``, then
    ``send_packed_command``, as the request path does) to its default host, localhost:6379,
    without asking the sentinels; this one asks them first."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._sock:
            self.connect()  # type: ignore[no-untyped-call,unused-ignore]
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call,unused-ignore]


class _SentinelTLS(_SentinelConnection, redis.sentinel.SentinelManagedSSLConnection):
    pass


class _AsyncSentinelConnection(asentinel.SentinelManagedConnection):
    """`_SentinelConnection` for redis.asyncio."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call,unused-ignore]
        await super().send_packed_command(command, check_health)


class _AsyncSentinelTLS(_AsyncSentinelConnection, asentinel.SentinelManagedSSLConnection):
    pass


class _SentinelRedis(redis.Redis):
    """A client of the primary a Sentinel names; closing it closes its sentinel connections too."""

    manager: redis.sentinel.Sentinel | None = None

    def close(self) -> None:
        super().close()
        if self.manager is not None:
            for client in self.manager.sentinels:
                client.close()


class _AsyncSentinelRedis(aredis.Redis):
    """`_SentinelRedis` for redis.asyncio."""

    manager: asentinel.Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.manager is not None:
            await self.manager.aclose()


def _sentinel_kwargs(address: BrokerAddress, options: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(address.sentinel)
    if address.tls:
        kwargs["ssl"] = True
    for name in ("socket_timeout", "socket_connect_timeout"):
        kwargs[name] = options.get(name) or SENTINEL_TIMEOUT
    if "retry" in options:
        kwargs["retry"] = options["retry"]
    return kwargs


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A blocking client of the broker at ``url``; ``options`` (the caller's timeouts, retries,
    pool size) go to its connections and win over the URL's.

    :raises ConfigurationError: the URL cannot be read.
    """
    address = parse(url)
    kwargs = {**address.connection, **options}
    if address.sentinels:
        kwargs["connection_class"] = _SentinelTLS if address.tls else _SentinelConnection
        # master_for returns an instance of redis_class (its annotation says only Redis).
        manager = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            list(address.sentinels), sentinel_kwargs=_sentinel_kwargs(address, options)
        )
        primary = cast(
            _SentinelRedis,
            manager.master_for(address.service, redis_class=_SentinelRedis, **kwargs),  # type: ignore[no-untyped-call,unused-ignore]
        )
        primary.manager = manager
        return primary
    cls = _Unix if address.scheme == "unix" else _TLS if address.tls else _TCP
    pool = redis.ConnectionPool(connection_class=cls, **kwargs)
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def async_client(url: str, **options: Any) -> aredis.Redis:
    """`sync_client` for redis.asyncio (its connections belong to the running event loop)."""
    address = parse(url)
    kwargs = {**address.connection, **options}
    if address.sentinels:
        kwargs["connection_class"] = _AsyncSentinelTLS if address.tls else _AsyncSentinelConnection
        manager = asentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            list(address.sentinels), sentinel_kwargs=_sentinel_kwargs(address, options)
        )
        primary = cast(
            _AsyncSentinelRedis, manager.master_for(address.service, redis_class=_AsyncSentinelRedis, **kwargs)
        )
        primary.manager = manager
        return primary
    cls = _AsyncUnix if address.scheme == "unix" else _AsyncTLS if address.tls else _AsyncTCP
    pool = aredis.ConnectionPool(connection_class=cls, **kwargs)
    client = aredis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def permanent_error(exc: BaseException) -> str | None:
    """Why ``exc`` will not go away by waiting (refused credentials, an ACL that denies a command, a
    certificate that does not verify), or None for an error worth waiting out. The reason is
    Redis's or OpenSSL's own words, which never hold the password."""
    if isinstance(exc, redis.AuthenticationError):
        return f"Redis refused the credentials of the broker URL ({exc})"
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return f"the broker URL's ACL user may not run a command wa-middleware needs ({exc})"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"the broker's TLS certificate did not verify ({cause.verify_message}): set ssl_ca_certs="
        if isinstance(cause, ssl.SSLError):
            return f"the TLS handshake with the broker failed ({cause.reason or cause})"
        cause = cause.__cause__ or cause.__context__
    return None
