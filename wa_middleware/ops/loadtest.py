"""Open-loop load tests of a webhook endpoint, judged by the sender's standard.

Open loop: request ``k`` is *scheduled* at ``start + k / rate`` whatever happened before it, and
its latency is measured from that scheduled time, not from when it was actually written. A server
that stalls therefore cannot hide the queue it builds up (no coordinated omission): requests that
find every connection busy wait for one, and that wait is part of their latency, as it would be
for the sender, who keeps sending whether or not the last delivery was answered.

Each generator process drives its share of the schedule over keep-alive HTTP/1.1 connections
(TLS when the URL is ``https``) with bare `asyncio.Protocol` objects: parsing an answer is a few
``bytes.find`` calls, which keeps the generator cheaper than the servers it measures. Several
processes split one rate when a single one cannot keep up. Every run also records how late the
generator itself fired its sends: when that grows, the figures measure the generator, not the
server, and the run says so.

Latencies go to an HdrHistogram when ``hdrhistogram`` is installed, else to a plain list (exact,
but larger); the plot needs ``matplotlib`` and is skipped without it. Nothing here prints: the
command line (`wa_middleware.cli.loadtest`) gets the figures through a progress callback and the
returned objects.
"""

from __future__ import annotations

import array
import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import datetime
import hashlib
import hmac
import json
import math
import multiprocessing
import queue as queue_module
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from .._version import __version__

if TYPE_CHECKING:
    from ..keys import KeyLayout

try:
    from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - exercised by forcing the fallback in the tests
    HdrHistogram = None

__all__ = [
    "BEHIND_MS",
    "SLOW_S",
    "SLO_MEDIAN_MS",
    "SLO_SHARE",
    "UNIQUE",
    "Credentials",
    "Latencies",
    "LoadGenerator",
    "LoadReport",
    "LoadResult",
    "LoadSpec",
    "Probe",
    "Progress",
    "QueueReport",
    "QueueSample",
    "QueueWatch",
    "Verdict",
    "describe_error",
    "judge",
    "notes",
    "parse_url",
    "probe",
    "sender_rate",
    "write_plot",
    "write_results",
]

#: The sender's standard: a median answer within 250 ms, and fewer than 1% of deliveries over 1 s.
SLO_MEDIAN_MS = 250.0
SLOW_S = 1.0
SLO_SHARE = 0.01

#: A generator that fires 1% of its sends later than this has fallen behind its schedule.
BEHIND_MS = 10.0

#: Replaced in every request body by the request's number: templates carrying it in their ids
#: give every delivery of a run ids of its own, as the sender's never repeat.
UNIQUE = b"@seq@"

#: Latencies in microseconds, from 1 us to 60 s.
_HIGHEST = 60_000_000
_SLOW_US = int(SLOW_S * 1e6)
_USER_AGENT = f"wa-middleware-loadtest/{__version__}"


def sender_rate(outgoing: float, incoming: float) -> float:
    """Deliveries per second the sender makes of ``outgoing`` sent and ``incoming`` received
    messages per second: three statuses (sent, delivered, read) for each sent one, plus one
    delivery for each received one."""
    if outgoing < 0 or incoming < 0 or outgoing + incoming <= 0:
        raise ValueError("the outgoing and incoming rates must not be negative, and not both zero")
    return 3 * outgoing + incoming


# -- latencies --------------------------------------------------------------------------------


class Latencies:
    """Latencies in microseconds: an HdrHistogram (3 significant digits) when ``hdrhistogram`` is
    installed, else every value in a plain array (exact percentiles, 8 bytes a request).

    :param exact: keep every value even when HdrHistogram is available.
    """

    def __init__(self, *, exact: bool = False) -> None:
        self._hist: Any = None
        self._values: array.array[int] | None = None
        self._sorted = True
        if HdrHistogram is not None and not exact:
            self._hist = HdrHistogram(1, _HIGHEST, 3)
            self.record: Callable[[int], object] = self._hist.record_value
        else:
            self._values = array.array("q")
            self.record = self._append

    @property
    def exact(self) -> bool:
        return self._values is not None

    def _append(self, us: int) -> None:
        assert self._values is not None
        self._values.append(us)
        self._sorted = False

    def _ordered(self) -> array.array[int]:
        assert self._values is not None
        if not self._sorted:
            self._values = array.array("q", sorted(self._values))
            self._sorted = True
        return self._values

    @property
    def count(self) -> int:
        return int(self._hist.get_total_count()) if self._values is None else len(self._values)

    def percentile(self, p: float) -> float:
        """The value at percentile ``p`` (0-100), in microseconds; NaN when empty."""
        if self.count == 0:
            return math.nan
        if self._values is None:
            return float(self._hist.get_value_at_percentile(p))
        values = self._ordered()
        rank = max(1, math.ceil(p / 100 * len(values)))  # nearest rank
        return float(values[min(rank, len(values)) - 1])

    def max(self) -> float:
        if self.count == 0:
            return math.nan
        return float(self._hist.get_max_value()) if self._values is None else float(max(self._values))

    def mean(self) -> float:
        if self.count == 0:
            return math.nan
        if self._values is None:
            return float(self._hist.get_mean_value())
        return sum(self._values) / len(self._values)

    def dump(self) -> tuple[str, bytes]:
        """A picklable copy, for `load` in another process."""
        if self._values is None:
            return "hdr", bytes(self._hist.encode())
        return "list", self._values.tobytes()

    def load(self, dumped: tuple[str, bytes]) -> None:
        """Add the values of a `dump`."""
        kind, data = dumped
        if kind == "hdr" and self._values is None:
            self._hist.decode_and_add(data)
        elif kind == "list" and self._values is not None:
            values = array.array("q")
            values.frombytes(data)
            self._values.extend(values)
            self._sorted = False
        else:
            raise ValueError("cannot merge a histogram and a plain list of latencies")

    def encoded(self) -> str | None:
        """The HdrHistogram's compressed base64 form (None for a plain list)."""
        return None if self._values is not None else bytes(self._hist.encode()).decode("ascii")


def _ms(us: float) -> float:
    return us / 1000.0


# -- what to send -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """How each request authenticates, as the webhook's auth scheme checks it. Several may be
    given together, for a webhook that requires all of them (``AllOf``).

    :param basic: ``(user, password)``: ``Authorization: Basic ...`` (``BasicAuth``).
    :param headers: fixed ``(name, value)`` headers: a header token (``HeaderAuth``) or any other.
    :param dialog360_secret: HMAC-SHA256 of the raw body in ``dialog360_header`` (``Dialog360Signature``).
    :param meta_app_secret: HMAC-SHA256 of the raw body in ``X-Hub-Signature-256`` (``HubSignature256``).
    """

    basic: tuple[str, str] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    dialog360_secret: bytes | None = None
    dialog360_header: str = "x-360dialog-signature"
    meta_app_secret: bytes | None = None

    def __post_init__(self) -> None:
        if self.basic is not None:
            user, password = self.basic
            if not user or not password or ":" in user:
                raise ValueError("Basic auth needs a non-empty user without ':' and a non-empty password")
        for name, value in (*self.headers, (self.dialog360_header, "")):
            _check_header(name, value)
        for secret in (self.dialog360_secret, self.meta_app_secret):
            if secret is not None and not secret:
                raise ValueError("a signature secret cannot be empty")

    @property
    def signs(self) -> bool:
        """Whether every body needs a signature of its own."""
        return self.dialog360_secret is not None or self.meta_app_secret is not None

    def schemes(self) -> list[str]:
        """The schemes these credentials satisfy, by name (never a secret)."""
        names = ["basic"] if self.basic is not None else []
        names += [f"header {name}" for name, _ in self.headers]
        if self.dialog360_secret is not None:
            names.append(f"360dialog signature ({self.dialog360_header})")
        if self.meta_app_secret is not None:
            names.append("Meta signature (X-Hub-Signature-256)")
        return names

    def fixed_headers(self) -> list[tuple[str, str]]:
        """The headers every request carries, whatever its body."""
        out: list[tuple[str, str]] = []
        if self.basic is not None:
            token = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode("ascii")
            out.append(("Authorization", f"Basic {token}"))
        out += self.headers
        return out

    def signature_headers(self, body: bytes) -> list[tuple[str, str]]:
        """The signature headers of ``body`` (``sha256=<hex>``, as the schemes' ``sign`` makes them)."""
        out = []
        if self.dialog360_secret is not None:
            out.append(
                (self.dialog360_header, "sha256=" + hmac.new(self.dialog360_secret, body, hashlib.sha256).hexdigest())
            )
        if self.meta_app_secret is not None:
            out.append(
                ("X-Hub-Signature-256", "sha256=" + hmac.new(self.meta_app_secret, body, hashlib.sha256).hexdigest())
            )
        return out


def _check_header(name: str, value: str) -> None:
    if not name or any(c in name for c in " \t\r\n:") or not name.isascii() or not name.isprintable():
        raise ValueError(f"invalid header name {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"the value of header {name!r} contains a line break")


@dataclass(frozen=True)
class _Url:
    tls: bool
    host: str
    port: int
    path: str
    host_header: str


def parse_url(url: str) -> _Url:
    """Split an ``http(s)://host[:port]/path[?query]`` URL; ValueError when it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not go in the URL: use --basic-auth")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: invalid port") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"{url!r}: no host")
    tls = parts.scheme == "https"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(c in path for c in " \r\n"):
        raise ValueError(f"{url!r}: the path contains spaces or line breaks")
    return _Url(tls, host, port or (443 if tls else 80), path, parts.netloc.rpartition("@")[2])


@dataclass(frozen=True)
class LoadSpec:
    """One fixed-rate run against one endpoint.

    :param host: the server's host name or address.
    :param port: its port.
    :param path: the request target (path and query).
    :param rate: requests per second, all generator processes together.
    :param duration: seconds measured, after ``warmup`` seconds sent but not recorded.
    :param bodies: request bodies, sent in this order, cycled; `UNIQUE` in a body is replaced by
        the request's number.
    :param headers: further headers of every request.
    :param connections: keep-alive connections at most, all processes together.
    :param drain_timeout: seconds to wait for outstanding answers after the last send; what is
        still missing then counts as an error (timeout).
    :param tls: HTTPS; ``insecure`` accepts any certificate (a self-signed one).
    :param host_header: the ``Host`` header (default ``host:port``).
    :param credentials: how each request authenticates.
    :param timeout: seconds a request may take from its scheduled time before it counts as an
        error (timeout) and its connection is closed; None waits until the drain timeout.
    :param connect_timeout: seconds a connection (and its TLS handshake) may take.
    """

    host: str
    port: int
    path: str
    rate: float
    duration: float
    bodies: tuple[bytes, ...]
    headers: tuple[tuple[str, str], ...] = ()
    warmup: float = 0.5
    connections: int = 32
    drain_timeout: float = 5.0
    tls: bool = False
    insecure: bool = False
    host_header: str | None = None
    credentials: Credentials = field(default_factory=Credentials)
    timeout: float | None = None
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("the rate must be a positive number")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise ValueError("the duration must be a positive number of seconds")
        if self.warmup < 0 or self.drain_timeout < 0 or self.connect_timeout <= 0:
            raise ValueError("the warm-up and drain time cannot be negative, the connect timeout must be positive")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError("the request timeout must be positive")
        if self.connections < 1:
            raise ValueError("at least one connection")
        if not self.bodies:
            raise ValueError("no request body to send")
        for name, value in self.headers:
            _check_header(name, value)

    @classmethod
    def for_url(cls, url: str, *, rate: float, duration: float, bodies: tuple[bytes, ...], **options: Any) -> LoadSpec:
        """The spec of a run against ``url`` (``http://`` or ``https://``); further options as for the class."""
        target = parse_url(url)
        return cls(
            target.host,
            target.port,
            target.path,
            rate=rate,
            duration=duration,
            bodies=bodies,
            tls=target.tls,
            host_header=target.host_header,
            **options,
        )

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self._host_header()}{self.path}"

    def _host_header(self) -> str:
        if self.host_header:
            return self.host_header
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


def _prefix(spec: LoadSpec) -> bytes:
    lines = [
        f"POST {spec.path} HTTP/1.1",
        f"Host: {spec._host_header()}",
        "Content-Type: application/json",
        f"User-Agent: {_USER_AGENT}",
    ]
    lines += [f"{name}: {value}" for name, value in (*spec.credentials.fixed_headers(), *spec.headers)]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def _request(prefix: bytes, credentials: Credentials, body: bytes) -> bytes:
    """One serialized request: a single ``write`` sends it."""
    if not credentials.signs:
        return b"%sContent-Length: %d\r\n\r\n%s" % (prefix, len(body), body)
    signed = "".join(f"{name}: {value}\r\n" for name, value in credentials.signature_headers(body))
    return b"%s%sContent-Length: %d\r\n\r\n%s" % (prefix, signed.encode("latin-1"), len(body), body)


def _ssl_context(insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def describe_error(exc: BaseException, connect_timeout: float | None = None) -> tuple[str, str]:
    """``(kind, message)`` of a failed connection: ``refused``, ``dns``, ``tls``, ``connect-timeout``, ``connect``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or str(exc)
        return "tls", f"the server's certificate is not trusted ({why}); --insecure accepts a self-signed one"
    if isinstance(exc, ssl.SSLError):
        hint = " (is the server plain http?)" if "WRONG_VERSION_NUMBER" in str(exc) else ""
        return "tls", f"TLS handshake failed: {exc.reason or exc}{hint}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "connection refused (nothing listens on that port?)"
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        after = f" within {connect_timeout:g} s" if connect_timeout else ""
        return "connect-timeout", f"no connection{after}"
    if isinstance(exc, OSError):
        return "connect", exc.strerror or str(exc) or type(exc).__name__
    return "connect", str(exc) or type(exc).__name__


# -- one probe --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """The outcome of one request sent before the load, to check the address and the auth."""

    status: int | None
    body: bytes = b""
    latency_ms: float = math.nan
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def probe(spec: LoadSpec, timeout: float = 10.0) -> Probe:
    """Send the first body of ``spec`` once (`UNIQUE` replaced by ``probe``) and wait for the answer."""
    return asyncio.run(_probe(spec, timeout))


async def _probe(spec: LoadSpec, timeout: float) -> Probe:
    body = spec.bodies[0].replace(UNIQUE, b"probe")
    request = _request(_prefix(spec), spec.credentials, body)
    context = _ssl_context(spec.insecure) if spec.tls else None
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(spec.host, spec.port, ssl=context, server_hostname=spec.host if context else None),
            spec.connect_timeout,
        )
    except (OSError, asyncio.TimeoutError) as exc:
        kind, message = describe_error(exc, spec.connect_timeout)
        return Probe(None, error_kind=kind, error=message)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.find(b"\r\n", i + 2)
            data = await asyncio.wait_for(reader.readexactly(int(lower[i + 17 : j])), timeout)
        else:
            data = await asyncio.wait_for(reader.read(65536), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        return Probe(None, error_kind="timeout", error=f"no answer within {timeout:g} s")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        if isinstance(exc, ssl.SSLError):
            kind, message = describe_error(exc)
            return Probe(None, error_kind=kind, error=message)
        if isinstance(exc, asyncio.IncompleteReadError) and not exc.partial:
            hint = "" if spec.tls else " (is it an https:// server?)"
            return Probe(None, error_kind="connection closed", error=f"the server closed the connection{hint}")
        return Probe(None, error_kind="connection closed", error=f"no valid HTTP answer ({exc or type(exc).__name__})")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return Probe(status, data, (time.monotonic() - started) * 1000)


# -- one generator process --------------------------------------------------------------------

#: The progress queue and the stop event of this generator process (set by `_init_process`).
_CHANNEL: tuple[Any, Any] | None = None


def _init_process(progress: Any, stop: Any) -> None:
    global _CHANNEL
    # Ctrl-C reaches the whole process group: the parent stops the run through ``stop``.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _CHANNEL = (progress, stop)


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight (no pipelining)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.scheduled = 0.0
        self.sent_at = 0.0
        self.busy = False
        self.need = -1
        self.chunked = False
        self.status = 0
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def send(self, request: bytes, scheduled: float) -> None:
        self.busy = True
        self.scheduled = scheduled
        self.sent_at = time.monotonic()
        self.need = -1
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for: this connection cannot be trusted any more
            if self.transport is not None:
                self.transport.abort()
            return
        buf = self.buf
        buf += data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            try:
                self.status = int(head[9:12])
            except ValueError:
                self.status = 0
            self.close_after = b"\r\nconnection: close" in head or head.startswith(b"http/1.0")
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                try:
                    self.need = end + 4 + int(head[i + 17 : j if j >= 0 else len(head)])
                except ValueError:
                    self.need = end + 4
                    self.close_after = True
                self.chunked = False
            else:
                self.chunked = b"\r\ntransfer-encoding: chunked" in head
                self.need = end + 4
                if not self.chunked:
                    self.close_after = True  # a body delimited by the close: never reuse the connection
        if self.chunked:
            if buf.find(b"0\r\n\r\n", self.need) < 0:
                return
        elif len(buf) < self.need:
            return
        buf.clear()
        self.busy = False
        self.run.completed_on(self, self.status, self.scheduled, self.sent_at)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.run.conns.discard(self)
        if self.busy:
            self.busy = False
            why = f"the server closed the connection before answering ({exc})" if exc else None
            self.run.failed_on(self, "connection closed", self.scheduled, why)
        else:
            self.run.dropped(self)


class _Run:
    def __init__(self, job: dict[str, Any]) -> None:
        spec: LoadSpec = job["spec"]
        self.spec = spec
        self.share: int = job["share"]
        self.shares: int = job["shares"]
        self.run_id: str = job["run_id"]
        self.start: float = job["start"]
        self.interval: float = job["interval"]
        self.rate = spec.rate
        self.measure_from: float = self.start + spec.warmup
        self.measure_to: float = self.measure_from + spec.duration
        self.end: float = self.measure_to  # the schedule's end: earlier when the run is stopped
        self.connections: int = job["connections"]
        self.context = _ssl_context(spec.insecure) if spec.tls else None
        self.exact: bool = job["exact"]
        self.prefix = _prefix(spec)
        self.templates = spec.bodies
        self.unique = any(UNIQUE in body for body in spec.bodies)
        # Without per-request ids, every request is serialized once, up front.
        self.prebuilt = None if self.unique else [_request(self.prefix, spec.credentials, b) for b in spec.bodies]
        self.hist = Latencies(exact=self.exact)
        self.service = Latencies(exact=self.exact)
        self.lag = Latencies(exact=self.exact)
        self.conns: set[_Conn] = set()
        self.idle: list[_Conn] = []
        self.backlog: collections.deque[tuple[float, int]] = collections.deque()
        self.outstanding = 0
        # Counters of the measured window, then of the whole run (for the progress line).
        self.measured = self.completed = self.ok = self.slow = self.bad = self.waited = 0
        self.non_200: collections.Counter[int] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.error_messages: dict[str, str] = {}
        self.all_sent = self.all_answered = self.all_ok = self.all_non_200 = self.all_errors = 0
        self.interval_latencies: list[int] = []
        self.interval_lag = 0
        self.tick = 0
        self.live = 0
        self.connecting = 0
        self.stopping = False
        self.done = asyncio.Event()
        self.schedule_done = False

    def request(self, k: int) -> bytes:
        if self.prebuilt is not None:
            return self.prebuilt[k % len(self.prebuilt)]
        body = self.templates[k % len(self.templates)].replace(UNIQUE, b"%d" % k)
        return _request(self.prefix, self.spec.credentials, body)

    def in_window(self, sched: float) -> bool:
        return self.measure_from <= sched < self.measure_to

    # connection management: connections open on demand, up to the limit, as a client pool
    # does. Pre-opening them all would park idle connections on servers that give each
    # connection a whole worker (gunicorn sync), and measure that instead of the app.
    def _grow(self) -> None:
        if self.backlog and not self.stopping and self.live + self.connecting < self.connections:
            self.connecting += 1
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Conn(self),
                    spec.host,
                    spec.port,
                    ssl=self.context,
                    server_hostname=spec.host if self.context else None,
                ),
                spec.connect_timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self.connecting -= 1
            kind, message = describe_error(exc, spec.connect_timeout)
            if self.backlog:
                sched, _ = self.backlog.popleft()
                self._fail(kind, sched, message)
            await asyncio.sleep(0.01)
            self._grow()
            return
        self.connecting -= 1
        self.live += 1
        self.conns.add(conn)
        if self.stopping:
            assert conn.transport is not None
            conn.transport.abort()
            return
        self._idle(conn)

    def _idle(self, conn: _Conn) -> None:
        if self.backlog and not self.stopping:
            sched, k = self.backlog.popleft()
            conn.send(self.request(k), sched)
        else:
            self.idle.append(conn)

    def dispatch(self, sched: float, k: int) -> None:
        self.all_sent += 1
        self.outstanding += 1
        if self.in_window(sched):
            self.measured += 1
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.send(self.request(k), sched)
                return
        if self.in_window(sched) and self.live + self.connecting >= self.connections:
            self.waited += 1  # every connection is busy (not merely still opening)
        self.backlog.append((sched, k))
        self._grow()

    # outcomes
    def _settle(self) -> None:
        self.outstanding -= 1
        if self.schedule_done and self.outstanding == 0:
            self.done.set()

    def completed_on(self, conn: _Conn, status: int, sched: float, sent_at: float) -> None:
        now = time.monotonic()
        latency_us = max(1, min(_HIGHEST, int((now - sched) * 1e6)))
        self.all_answered += 1
        self.interval_latencies.append(latency_us)
        if status == 200:
            self.all_ok += 1
        else:
            self.all_non_200 += 1
        if self.in_window(sched):
            self.completed += 1
            self.hist.record(latency_us)
            self.service.record(max(1, min(_HIGHEST, int((now - sent_at) * 1e6))))
            slow = latency_us > _SLOW_US
            self.slow += slow
            if status == 200:
                self.ok += 1
            else:
                self.non_200[status] += 1
            if slow or status != 200:
                self.bad += 1
        self._settle()
        if conn.close_after:
            assert conn.transport is not None
            conn.transport.close()  # connection_lost() follows and opens a replacement if needed
        else:
            self._idle(conn)

    def _fail(self, kind: str, sched: float, message: str | None = None) -> None:
        self.all_errors += 1
        if self.in_window(sched):
            self.errors[kind] += 1
            self.bad += 1
            if message and kind not in self.error_messages:
                self.error_messages[kind] = message
        self._settle()

    def failed_on(self, conn: _Conn, kind: str, sched: float, message: str | None) -> None:
        self.live -= 1
        self._fail(kind, sched, message or "the server closed the connection before answering")
        self._grow()

    def dropped(self, conn: _Conn) -> None:
        self.live -= 1
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        self._grow()

    def _expire(self, now: float) -> None:
        """Requests older than the timeout (from their scheduled time) fail as timeouts."""
        timeout = self.spec.timeout
        if timeout is None:
            return
        limit = now - timeout
        message = f"no answer within {timeout:g} s"
        for conn in list(self.conns):
            if conn.busy and conn.scheduled < limit and conn.transport is not None:
                conn.busy = False  # connection_lost() then counts nothing more
                self._fail("timeout", conn.scheduled, message)
                conn.transport.abort()
        while self.backlog and self.backlog[0][0] < limit:
            sched, _ = self.backlog.popleft()
            self._fail("timeout", sched, message)

    def snapshot(self, final: bool = False) -> dict[str, Any]:
        out = {
            "run": self.run_id,
            "share": self.share,
            "tick": self.tick,
            "final": final,
            "sent": self.all_sent,
            "answered": self.all_answered,
            "ok": self.all_ok,
            "non_200": self.all_non_200,
            "errors": self.all_errors,
            "in_flight": self.outstanding - len(self.backlog),
            "waiting": len(self.backlog),
            "latencies": self.interval_latencies,
            "lag_us": self.interval_lag,
        }
        self.interval_latencies = []
        self.interval_lag = 0
        return out

    async def _housekeeping(self) -> None:
        """Every 0.1 s: stop when asked, time out old requests, report progress each interval."""
        progress, stop = _CHANNEL if _CHANNEL is not None else (None, None)
        next_tick = self.start + self.interval
        while not self.stopping:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            if stop is not None and self.end > now and stop.is_set():
                self.end = now
                self.measure_to = min(self.measure_to, now)
            self._expire(now)
            if now >= next_tick:
                self.tick += 1
                next_tick += self.interval
                if progress is not None:
                    progress.put(self.snapshot())

    async def run(self) -> dict[str, Any]:
        cpu_started, wall_started = time.process_time(), time.monotonic()
        keeper = asyncio.get_running_loop().create_task(self._housekeeping())
        rate, shares, start = self.rate, self.shares, self.start
        k = self.share
        sched = start + k / rate
        record_lag = self.lag.record
        while sched < self.end:
            now = time.monotonic()
            if sched > now:
                # At least a millisecond: uvloop truncates shorter timers to 0, and the loop would spin
                # a core (the server's, on a small machine) instead of sending what is due 1 ms later.
                await asyncio.sleep(max(sched - now, 0.001))
                continue
            while sched <= now and sched < self.end:
                lag_us = max(1, min(_HIGHEST, int((now - sched) * 1e6)))
                record_lag(lag_us)
                if lag_us > self.interval_lag:
                    self.interval_lag = lag_us
                self.dispatch(sched, k)
                k += shares
                sched = start + k / rate  # from the start each time: no drift from adding steps
        self.schedule_done = True
        if self.outstanding:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self.done.wait(), self.spec.drain_timeout)
        self.stopping = True
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        # Whatever has not been answered by now is a timeout, wherever it waited.
        message = f"no answer {self.spec.drain_timeout:g} s after the last send"
        while self.backlog:
            sched_time, _ = self.backlog.popleft()
            self._fail("timeout", sched_time, message)
        for conn in list(self.conns):
            if conn.busy:
                conn.busy = False
                self._fail("timeout", conn.scheduled, message)
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)  # let the aborted transports call connection_lost
        cpu = (time.process_time() - cpu_started) / max(1e-9, time.monotonic() - wall_started)
        progress = _CHANNEL[0] if _CHANNEL is not None else None
        if progress is not None:
            self.tick += 1
            progress.put(self.snapshot(final=True))
        return {
            "hist": self.hist.dump(),
            "service": self.service.dump(),
            "lag": self.lag.dump(),
            "sent": self.all_sent,
            "measured": self.measured,
            "completed": self.completed,
            "ok": self.ok,
            "slow": self.slow,
            "bad": self.bad,
            "waited": self.waited,
            "non_200": dict(self.non_200),
            "errors": dict(self.errors),
            "error_messages": self.error_messages,
            "cpu": cpu,
            "measured_s": max(0.0, min(self.end, self.measure_to) - self.measure_from),
        }


def _run_share(job: dict[str, Any]) -> dict[str, Any]:
    """Entry point of a generator process: drive one share of the schedule."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional: the generator works without it, a little slower
        return asyncio.run(_Run(job).run())
    return uvloop.run(_Run(job).run())


# -- the parent: processes, progress, the merged result ---------------------------------------


@dataclass(frozen=True)
class Progress:
    """One interval of a run, as the progress callback gets it (and the results file keeps it).

    Counters are cumulative over the whole run, warm-up included; the latencies, the answer rate
    and the generator's lateness are those of the interval.
    """

    elapsed: float
    phase: str
    sent: int
    answered: int
    ok: int
    non_200: int
    errors: int
    in_flight: int
    waiting: int
    answered_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    lag_ms: float

    @property
    def behind(self) -> bool:
        """The generator fired a send more than `BEHIND_MS` late during this interval."""
        return self.lag_ms > BEHIND_MS


@dataclass
class LoadResult:
    """The merged outcome of one run; latencies in microseconds.

    ``measured`` counts the requests scheduled in the measured window; each of them ended in
    exactly one of ``completed`` (answered, whatever the status) and the ``errors`` (no answer).
    """

    rate: float
    duration: float
    histogram: Latencies
    service: Latencies
    send_lag: Latencies
    sent: int = 0
    measured: int = 0
    completed: int = 0
    ok: int = 0
    non_200: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_messages: dict[str, str] = field(default_factory=dict)
    slow: int = 0
    bad: int = 0
    waited: int = 0
    processes: int = 1
    connections: int = 0
    cpu: list[float] = field(default_factory=list)
    timeline: list[Progress] = field(default_factory=list)
    interrupted: bool = False

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def non_200_count(self) -> int:
        return sum(self.non_200.values())

    def percentile_ms(self, p: float) -> float:
        return _ms(self.histogram.percentile(p))

    @property
    def over_1s_fraction(self) -> float:
        """Answers slower than 1 s, and requests never answered, among those measured."""
        return (self.slow + self.error_count) / self.measured if self.measured else 1.0

    @property
    def failed_fraction(self) -> float:
        """Requests the sender would deliver again (over 1 s, not a 200, or no answer), among those measured."""
        return self.bad / self.measured if self.measured else 1.0

    @property
    def lag_p99_ms(self) -> float:
        return _ms(self.send_lag.percentile(99))

    @property
    def generator_behind(self) -> bool:
        """The generator fired 1% of its sends more than `BEHIND_MS` late: the run measured it too."""
        return self.send_lag.count > 0 and self.lag_p99_ms > BEHIND_MS

    def summary(self) -> dict[str, Any]:
        """Plain figures, for a results file."""
        h = self.histogram
        return {
            "rate": self.rate,
            "duration_s": self.duration,
            "sent": self.sent,
            "measured": self.measured,
            "completed": self.completed,
            "achieved_rps": round(self.completed / self.duration, 1) if self.duration else 0.0,
            "ok": self.ok,
            "non_200": self.non_200_count,
            "non_200_by_status": {str(k): v for k, v in sorted(self.non_200.items())},
            "errors": self.error_count,
            "errors_by_kind": dict(sorted(self.errors.items())),
            "error_messages": dict(sorted(self.error_messages.items())),
            "p50_ms": self.percentile_ms(50),
            "p90_ms": self.percentile_ms(90),
            "p99_ms": self.percentile_ms(99),
            "p99_9_ms": self.percentile_ms(99.9),
            "max_ms": _ms(h.max()),
            "mean_ms": _ms(h.mean()),
            "service_p50_ms": _ms(self.service.percentile(50)),
            "service_p99_ms": _ms(self.service.percentile(99)),
            "send_lag_p99_ms": self.lag_p99_ms,
            "send_lag_max_ms": _ms(self.send_lag.max()),
            "generator_behind": self.generator_behind,
            "generator_cpu": [round(c, 3) for c in self.cpu],
            "processes": self.processes,
            "connections": self.connections,
            "waited_for_connection": self.waited,
            # Errors never got an answer: for the sender they are as bad as a slow answer.
            "over_1s_fraction": self.over_1s_fraction,
            "failed_fraction": self.failed_fraction,
            "interrupted": self.interrupted,
            "percentile_curve": _curve(h),
            "histogram": h.encoded(),
        }


def _curve(h: Latencies) -> list[list[float]]:
    """(percentile, ms) points for the latency-by-percentile plot, log-spaced toward the tail."""
    if h.count == 0:
        return []
    points = [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0]
    return [[p, _ms(h.percentile(p))] for p in points]


class LoadGenerator:
    """A pool of generator processes, kept alive across runs (spawning one costs about 0.3 s).

    :param processes: how many processes share each run's schedule and connections.
    :param exact: keep every latency (a plain list) even when HdrHistogram is installed.
    """

    def __init__(self, processes: int = 1, *, exact: bool = False) -> None:
        self.processes = max(1, processes)
        self.exact = exact or HdrHistogram is None
        context = multiprocessing.get_context("spawn")
        self._progress: Any = context.Queue()
        self._stop: Any = context.Event()
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=context,
            initializer=_init_process,
            initargs=(self._progress, self._stop),
        )
        # Start the processes now, so the first run does not pay for it.
        list(self._pool.map(_noop, range(self.processes)))

    def run(
        self, spec: LoadSpec, progress: Callable[[Progress], None] | None = None, *, interval: float = 1.0
    ) -> LoadResult:
        """Drive one fixed-rate run; blocks for ``warmup + duration`` seconds plus the drain.

        :param progress: called with each interval's `Progress`, in this thread.
        :param interval: seconds between two progress reports.

        A KeyboardInterrupt while it runs stops the schedule there; the result covers what was
        sent until then (``interrupted`` is set). A second one is raised.
        """
        shares = self.processes
        run_id = uuid.uuid4().hex
        self._stop.clear()
        start = time.monotonic() + 0.05
        jobs = [
            {
                "spec": spec,
                "share": i,
                "shares": shares,
                "run_id": run_id,
                "start": start,
                "interval": interval,
                "connections": max(1, spec.connections // shares),
                "exact": self.exact,
            }
            for i in range(shares)
        ]
        futures = [self._pool.submit(_run_share, job) for job in jobs]
        timeline: list[Progress] = []
        ticks: dict[int, dict[int, dict[str, Any]]] = collections.defaultdict(dict)
        latest: dict[int, dict[str, Any]] = {}
        emitted = 0
        interrupted = False
        drain = spec.drain_timeout + (spec.timeout or 0.0)
        deadline = start + spec.warmup + spec.duration + drain + 60.0

        def emit(tick: int) -> None:
            nonlocal emitted
            parts = ticks.pop(tick)
            for share, part in parts.items():
                latest[share] = part
            row = _progress_row(spec, start, interval, tick, parts, latest, timeline[-1].elapsed if timeline else 0.0)
            timeline.append(row)
            emitted = tick
            if progress is not None:
                progress(row)

        while True:
            try:
                running = not all(f.done() for f in futures)
                try:
                    item = self._progress.get(timeout=0.05 if running else 0.2)
                except queue_module.Empty:
                    if not running:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("the generator processes did not finish in time") from None
                    continue
                if item["run"] != run_id:
                    continue  # left over from an earlier run of this pool
                ticks[item["tick"]][item["share"]] = item
                while ticks and min(ticks) == emitted + 1 and len(ticks[emitted + 1]) == shares:
                    emit(emitted + 1)
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                self._stop.set()
        for tick in sorted(ticks):  # a share that ended a tick earlier than another
            emit(tick)
        parts = [f.result() for f in futures]
        result = LoadResult(
            spec.rate,
            max(part["measured_s"] for part in parts),
            histogram=Latencies(exact=self.exact),
            service=Latencies(exact=self.exact),
            send_lag=Latencies(exact=self.exact),
            processes=shares,
            connections=spec.connections,
            timeline=timeline,
            interrupted=interrupted,
        )
        for part in parts:
            result.histogram.load(part["hist"])
            result.service.load(part["service"])
            result.send_lag.load(part["lag"])
            for name in ("sent", "measured", "completed", "ok", "slow", "bad", "waited"):
                setattr(result, name, getattr(result, name) + part[name])
            for status, n in part["non_200"].items():
                result.non_200[int(status)] = result.non_200.get(int(status), 0) + n
            for kind, n in part["errors"].items():
                result.errors[kind] = result.errors.get(kind, 0) + n
            for kind, message in part["error_messages"].items():
                result.error_messages.setdefault(kind, message)
            result.cpu.append(part["cpu"])
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._progress.close()
        self._progress.join_thread()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _noop(_: int) -> None:
    return None


def _progress_row(
    spec: LoadSpec,
    start: float,
    interval: float,
    tick: int,
    parts: dict[int, dict[str, Any]],
    latest: dict[int, dict[str, Any]],
    since: float,
) -> Progress:
    latencies = sorted(v for part in parts.values() for v in part["latencies"])
    final = any(part["final"] for part in parts.values())
    # A regular tick covers the interval that ends at tick * interval; the last one ends now.
    elapsed = time.monotonic() - start if final else tick * interval
    if final:
        phase = "end"
    elif elapsed <= spec.warmup:
        phase = "warm-up"
    elif elapsed <= spec.warmup + spec.duration + 0.05:
        phase = "measuring"
    else:
        phase = "draining"

    def pct(p: float) -> float:
        if not latencies:
            return math.nan
        return _ms(latencies[min(len(latencies), max(1, math.ceil(p / 100 * len(latencies)))) - 1])

    def total(key: str) -> int:
        return sum(part[key] for part in latest.values())

    return Progress(
        elapsed=round(elapsed, 3),
        phase=phase,
        sent=total("sent"),
        answered=total("answered"),
        ok=total("ok"),
        non_200=total("non_200"),
        errors=total("errors"),
        in_flight=total("in_flight"),
        waiting=total("waiting"),
        answered_per_s=round(len(latencies) / max(1e-3, elapsed - since), 1),
        p50_ms=pct(50),
        p99_ms=pct(99),
        max_ms=_ms(latencies[-1]) if latencies else math.nan,
        lag_ms=_ms(max(part["lag_us"] for part in parts.values())),
    )


# -- the verdict ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The sender's verdict on a run: PASS when the median answer took at most `SLO_MEDIAN_MS`
    and fewer than `SLO_SHARE` of the requests were answered late (over `SLOW_S`), not with a
    200, or not at all: the sender delivers each of those again."""

    passed: bool
    median_ms: float
    p99_ms: float
    over_1s_fraction: float
    failed_fraction: float
    non_200: int
    errors: int
    measured: int
    generator_behind: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(result: LoadResult) -> Verdict:
    """The sender's verdict on ``result``; a run with nothing measured fails."""
    median = result.percentile_ms(50)
    passed = (
        result.measured > 0
        and not math.isnan(median)
        and median <= SLO_MEDIAN_MS
        and result.failed_fraction < SLO_SHARE
    )
    return Verdict(
        passed=passed,
        median_ms=median,
        p99_ms=result.percentile_ms(99),
        over_1s_fraction=result.over_1s_fraction,
        failed_fraction=result.failed_fraction,
        non_200=result.non_200_count,
        errors=result.error_count,
        measured=result.measured,
        generator_behind=result.generator_behind,
    )


def notes(result: LoadResult) -> list[str]:
    """What the figures alone do not say: the generator fell behind, connections ran out, and so on."""
    out: list[str] = []
    if result.generator_behind:
        out.append(
            f"generator fell behind: 1% of its sends left more than {result.lag_p99_ms:.0f} ms late "
            f"(limit {BEHIND_MS:g} ms), and that lateness is inside the latencies; run it with "
            f"--processes {result.processes + 1} (or from a machine with spare cores)"
        )
    busy = [c for c in result.cpu if c > 0.9]
    if busy and not result.generator_behind:
        out.append(f"a generator process used {max(busy):.0%} of a core: close to its limit; --processes adds more")
    if result.waited and result.measured:
        share = result.waited / result.measured
        if share >= 0.01:
            out.append(
                f"{share:.1%} of the requests found all {result.connections} connections busy and waited for one "
                "(counted in their latency): the server answers slowly, or it needs more --connections"
            )
    if result.errors.get("timeout"):
        out.append(f"{result.errors['timeout']} request(s) got no answer in time (counted as errors)")
    if result.interrupted:
        out.append(f"interrupted: the figures cover the first {result.duration:.1f} s measured")
    if result.histogram.exact and HdrHistogram is None:
        out.append("hdrhistogram is not installed: every latency is kept in a list (pip install hdrhistogram)")
    return out


# -- the queue: did the callbacks keep up? -----------------------------------------------------


@dataclass(frozen=True)
class QueueSample:
    """The queue at one moment: ``depth`` messages waiting, ``unfinished`` not yet done (waiting
    or running), the oldest waiting one ``lag_s`` seconds old (None when none waits)."""

    elapsed: float
    depth: int
    unfinished: int
    lag_s: float | None


@dataclass
class QueueReport:
    """The queue over a run. The callbacks kept up when, at the end of the load, the oldest
    waiting delivery was at most ``lag_limit_s`` old and the queue held no more than one second
    of the load beyond what it held at the start."""

    queue: str
    samples: list[QueueSample] = field(default_factory=list)
    failures: int = 0
    last_error: str | None = None
    lag_limit_s: float = 1.0
    rate: float = 0.0

    @property
    def depth_start(self) -> int:
        return self.samples[0].depth if self.samples else 0

    @property
    def depth_end(self) -> int:
        return self.samples[-1].depth if self.samples else 0

    @property
    def depth_max(self) -> int:
        return max((s.depth for s in self.samples), default=0)

    @property
    def lag_max_s(self) -> float:
        return max((s.lag_s or 0.0 for s in self.samples), default=0.0)

    @property
    def lag_end_s(self) -> float:
        return (self.samples[-1].lag_s or 0.0) if self.samples else 0.0

    @property
    def kept_up(self) -> bool | None:
        """None when the queue could not be read at all."""
        if not self.samples:
            return None
        grew = self.depth_end - self.depth_start > max(10.0, self.rate)
        return self.lag_end_s <= self.lag_limit_s and not grew

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "kept_up": self.kept_up,
            "depth_start": self.depth_start,
            "depth_max": self.depth_max,
            "depth_end": self.depth_end,
            "lag_max_s": round(self.lag_max_s, 3),
            "lag_end_s": round(self.lag_end_s, 3),
            "lag_limit_s": self.lag_limit_s,
            "failures": self.failures,
            "last_error": self.last_error,
            "samples": [asdict(s) for s in self.samples],
        }


class QueueWatch:
    """Samples a webhook's queue in a thread while a load runs: its depth (``LLEN``), what is not
    finished (``HLEN`` of the message hash) and the age of the oldest waiting message (its stored
    ``message_timestamp`` against the Redis server's clock).

    :param broker_url: the Redis URL the webhook stores deliveries in.
    :param keys: the webhook's key layout (namespace and queue name).
    :param interval: seconds between two samples.
    """

    def __init__(self, broker_url: str, keys: KeyLayout, *, interval: float = 0.5, timeout: float = 2.0) -> None:
        import redis

        from ..redis_url import sync_client
        from ..worker.encoder import MsgpackEncoder

        self.keys = keys
        self.interval = interval
        self._decode = MsgpackEncoder().decode
        self._client = sync_client(broker_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self.report = QueueReport(keys.queue)

    def sample(self) -> QueueSample:
        """One sample now; raises the client's error when Redis does not answer."""
        pipe = self._client.pipeline(transaction=False)
        pipe.llen(self.keys.queue)
        pipe.hlen(self.keys.messages)
        pipe.lindex(self.keys.queue, 0)
        pipe.time()
        depth, unfinished, head, (seconds, micros) = pipe.execute()
        lag: float | None = None
        if head is not None:
            stored = self._client.hget(self.keys.messages, head)
            if stored is not None:
                with contextlib.suppress(Exception):  # not a message of ours: no lag from it
                    stamp = float(self._decode(cast(bytes, stored))["message_timestamp"]) / 1000
                    lag = max(0.0, seconds + micros / 1e6 - stamp)
        return QueueSample(round(time.monotonic() - self._started, 3), int(depth), int(unfinished), lag)

    def _loop(self) -> None:
        while True:
            try:
                self.report.samples.append(self.sample())
            except self._errors as exc:
                self.report.failures += 1
                self.report.last_error = str(exc) or type(exc).__name__
            if self._stop.wait(self.interval):
                return

    def start(self, rate: float = 0.0) -> None:
        """Sample from now on, in a thread; ``rate`` is the load's, for the kept-up rule."""
        self.report.rate = rate
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="wa-loadtest-queue", daemon=True)
        self._thread.start()

    def stop(self) -> QueueReport:
        """Take a last sample and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(*self._errors):
            self.report.samples.append(self.sample())
        self._client.close()
        return self.report


# -- the report and its files -----------------------------------------------------------------


@dataclass
class LoadReport:
    """Everything a run produced, for the results file and the plot."""

    spec: LoadSpec
    result: LoadResult
    verdict: Verdict
    notes: list[str]
    queue: QueueReport | None = None
    started_utc: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "tool": _USER_AGENT,
            "started_utc": self.started_utc,
            "url": spec.url,
            "options": {
                "rate": spec.rate,
                "duration_s": spec.duration,
                "warmup_s": spec.warmup,
                "connections": spec.connections,
                "processes": self.result.processes,
                "timeout_s": spec.timeout,
                "drain_timeout_s": spec.drain_timeout,
                "tls": spec.tls,
                "insecure": spec.insecure,
                # Which schemes, never the secrets.
                "auth": spec.credentials.schemes(),
                "bodies": len(spec.bodies),
                "unique_ids": any(UNIQUE in b for b in spec.bodies),
                **self.extra,
            },
            "standard": {"median_ms": SLO_MEDIAN_MS, "slow_s": SLOW_S, "share": SLO_SHARE},
            "verdict": self.verdict.as_dict(),
            "notes": self.notes,
            "summary": self.result.summary(),
            "timeline": [asdict(row) for row in self.result.timeline],
            "queue": self.queue.as_dict() if self.queue is not None else None,
        }


def _plain(value: Any) -> Any:
    """NaN and infinities become None: the results file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_results(report: LoadReport, path: str | Path) -> Path:
    """Write the report as JSON to ``path``; returns it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_plain(report.as_dict()), indent=1, allow_nan=False) + "\n")
    return out


def write_plot(report: LoadReport, path: str | Path) -> Path | None:
    """Plot the latencies over time and by percentile (and the queue, when watched) to a PNG.

    Returns the path, or None when ``matplotlib`` is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    result = report.result
    rows = result.timeline
    panels = 3 if report.queue is not None and report.queue.samples else 2
    figure = Figure(figsize=(9, 3.2 * panels), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1)
    verdict = "PASS" if report.verdict.passed else "FAIL"
    figure.suptitle(f"{report.spec.url}: {report.spec.rate:g} req/s, {verdict}", fontsize=10)

    over_time = axes[0]
    xs = [row.elapsed for row in rows]
    for label, values in (("p50", [row.p50_ms for row in rows]), ("p99", [row.p99_ms for row in rows])):
        over_time.plot(xs, [v if math.isfinite(v) else float("nan") for v in values], label=label)
    over_time.axhline(SLO_MEDIAN_MS, color="tab:red", linestyle=":", linewidth=1, label="median limit")
    if report.spec.warmup:
        over_time.axvspan(0, report.spec.warmup, color="0.9", label="warm-up")
    over_time.set_yscale("log")
    over_time.set_xlabel("seconds")
    over_time.set_ylabel("latency (ms)")
    over_time.legend(loc="upper left", fontsize=8)
    throughput = over_time.twinx()
    throughput.plot(xs, [row.answered_per_s for row in rows], color="0.6", linewidth=1)
    throughput.set_ylabel("answers/s", color="0.4")
    throughput.set_ylim(bottom=0)

    by_percentile = axes[1]
    curve = _curve(result.histogram)
    if curve:
        px = [-math.log10(max(1e-5, 1 - p / 100)) for p, _ in curve]
        by_percentile.plot(px, [max(v, 0.01) for _, v in curve], marker="o", markersize=3)
        ticks = [0.0, 50.0, 90.0, 99.0, 99.9, 99.99]
        by_percentile.set_xticks([-math.log10(1 - p / 100) for p in ticks[:-1]] + [4.0])
        by_percentile.set_xticklabels([f"{p:g}" for p in ticks])
    by_percentile.axhline(SLOW_S * 1000, color="tab:red", linestyle=":", linewidth=1, label="1 s")
    by_percentile.set_yscale("log")
    by_percentile.set_xlabel("percentile")
    by_percentile.set_ylabel("latency (ms)")
    by_percentile.legend(loc="upper left", fontsize=8)

    if panels == 3:
        assert report.queue is not None
        depth = axes[2]
        samples = report.queue.samples
        depth.plot([s.elapsed for s in samples], [s.depth for s in samples], label="waiting")
        depth.plot([s.elapsed for s in samples], [s.unfinished for s in samples], label="not finished")
        depth.set_xlabel("seconds")
        depth.set_ylabel("messages")
        depth.legend(loc="upper left", fontsize=8)
        lag = depth.twinx()
        lag.plot([s.elapsed for s in samples], [s.lag_s or 0.0 for s in samples], color="tab:red", linewidth=1)
        lag.set_ylabel("oldest waiting (s)", color="tab:red")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    return out
