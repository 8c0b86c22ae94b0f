"""A health check for load balancers and Kubernetes probes: is the broker reachable, how fast.

``200 {"status": "ok", "broker": {"reachable": true, "latency_ms": 0.4}, ...}`` when a PING
comes back in time, ``503`` with ``"status": "unavailable"`` otherwise: the same broker the
request path writes to, so a 200 means deliveries can be stored. Mount it where you like::

    health = HealthCheck(wa)                      # or HealthCheck("redis://...")
    fastapi_app.router.routes.append(Route("/healthz", health))   # ASGI (starlette.routing.Route)
    DispatcherMiddleware(flask_app.wsgi_app, {"/healthz": health.wsgi})   # WSGI
    report = health.check()                       # a plain function call

or let the middleware answer it: ``Webhook(..., health_path="/healthz")``. The answer names
neither the broker's URL (it may hold a password) nor anything of the deliveries.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from .._version import __version__
from ..keys import KeyLayout
from ..memory import memory_report, policy_error
from .core import Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from starlette.types import Receive, Scope, Send

    from .enqueue import AsyncEnqueuer, SyncEnqueuer

__all__ = ["HealthCheck", "HealthReport"]

_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class HealthReport:
    """The outcome of one check.

    :ivar ok: the broker answered a PING in time.
    :ivar latency_ms: the PING round trip, or None when it failed.
    :ivar error: why it failed (an exception class name), or None.
    :ivar memory: the broker's used and maximum memory (bytes; max 0: no limit) and eviction policy,
        when it answered; a policy that could evict deliveries makes the check fail.
    """

    ok: bool
    latency_ms: float | None
    error: str | None = None
    memory: dict[str, Any] | None = None
    #: For a `Webhook`: queue depth, age of the oldest waiting delivery, retries waiting, dead letters,
    #: and the worker processes' heartbeats (alive: within ``recovery_timeout``). Reported, never
    #: failing the check: the check is about storing deliveries.
    overview: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        broker: dict[str, Any] = {"reachable": self.latency_ms is not None, "latency_ms": self.latency_ms}
        if self.memory is not None:
            broker["memory"] = self.memory
        if self.error is not None:
            broker["error"] = self.error
        out = {"status": "ok" if self.ok else "unavailable", "broker": broker, "version": __version__}
        if self.overview is not None:
            out.update(self.overview)
        return out

    def response(self, method: str = "GET") -> Response:
        """The HTTP answer for this report; ``405`` for a method other than GET or HEAD."""
        if method not in _METHODS:
            body = b'{"error":"method not allowed"}'
            extra: tuple[tuple[str, str], ...] = (("allow", "GET, HEAD"),)
            return Response(
                405, (("content-type", "application/json"), ("content-length", str(len(body))), *extra), body
            )
        body = msgspec.json.encode(self.as_dict())
        headers = (
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
        )
        return Response(200 if self.ok else 503, headers, b"" if method == "HEAD" else body)


def _overview_commands(pipe: Any, keys: KeyLayout) -> Any:
    pipe.time()
    pipe.llen(keys.queue)
    pipe.zrange(keys.heartbeats, 0, -1, withscores=True)
    pipe.lindex(keys.queue, 0)
    pipe.zcard(keys.retries)
    pipe.zcard(keys.dead_letters)
    return pipe


_timestamp = msgspec.msgpack.Decoder(dict[str, Any])


def _overview(found: list[Any], oldest: bytes | None, recovery_timeout: float) -> dict[str, Any]:
    (seconds, micros), depth, beats, _, retries, dead = found
    now = int(seconds) * 1000 + int(micros) // 1000
    age = None
    if oldest is not None:
        try:
            age = round((now - int(_timestamp.decode(oldest)["message_timestamp"])) / 1000, 3)
        except Exception:
            age = None
    workers = [
        {"id": (bid.decode() if isinstance(bid, bytes) else bid)[:8], "last_seen_s": round((now - score) / 1000, 2),
         "alive": now - score <= recovery_timeout * 1000}
        for bid, score in beats
    ]  # fmt: skip
    return {
        "queue": {
            "waiting": int(depth),
            "oldest_age_s": age,
            "retries_waiting": int(retries),
            "dead_letters": int(dead),
        },
        "workers": {"alive": sum(1 for w in workers if w["alive"]), "processes": workers},
    }


def _report(seconds: float, memory: dict[str, Any]) -> HealthReport:
    refused = policy_error({"maxmemory_policy": memory.get("policy")})
    return HealthReport(refused is None, round(seconds * 1000, 3), "MemoryPolicy" if refused else None, memory)


def _reason(exc: BaseException) -> str:
    # QueueUnavailable carries the underlying exception's class name; never str(exc) of a
    # redis error, which may quote the URL.
    from ..errors import QueueUnavailable

    if isinstance(exc, QueueUnavailable) and exc.args:
        return str(exc.args[0])
    return type(exc).__name__


class EnqueuerSource(Protocol):
    """Whose request-path clients to check: a `Webhook` is one."""

    def sync_enqueuer(self) -> SyncEnqueuer: ...

    async def async_enqueuer(self) -> AsyncEnqueuer: ...


class HealthCheck:
    """Checks the broker of a `Webhook` (through the very clients its request path uses) or of a URL.

    :param source: a `Webhook`, or a Redis URL.
    :param timeout: seconds the broker has to answer.
    """

    def __init__(self, source: EnqueuerSource | str, *, timeout: float = 1.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if isinstance(source, str):
            from ..redis_url import parse

            parse(source)  # a mistake in the URL fails here, not as an unhealthy report
        self.source = source
        self.timeout = timeout
        self._sync: Any = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _url(self) -> str:
        return self.source if isinstance(self.source, str) else str(getattr(self.source, "broker_url", ""))

    def _sync_client(self) -> Any:
        if self._sync is None:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            from ..redis_url import sync_client

            self._sync = sync_client(
                self._url(),
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
        return self._sync

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            from ..redis_url import async_client

            client = async_client(
                self._url(),
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._async[loop] = client
        return client

    def check(self) -> HealthReport:
        """Check now, blocking (for WSGI servers, scripts and probes)."""
        try:
            if isinstance(self.source, str):
                started = time.perf_counter()
                self._sync_client().ping()
                seconds = time.perf_counter() - started
                memory = memory_report(self._sync_client().info("memory"))
            else:
                enqueuer = self.source.sync_enqueuer()
                seconds = enqueuer.ping()
                memory = enqueuer.memory()
        except Exception as exc:
            return HealthReport(False, None, _reason(exc))
        report = _report(seconds, memory)
        keys = getattr(self.source, "keys", None)
        if isinstance(keys, KeyLayout) and not getattr(enqueuer, "in_memory", False):  # not the testing kit's
            try:
                client = self._sync_client()
                found = _overview_commands(client.pipeline(transaction=False), keys).execute()
                oldest = client.hget(keys.messages, found[3]) if found[3] else None
                report = replace(report, overview=_overview(found, oldest, self._recovery()))
            except Exception as exc:
                report = replace(report, overview={"error": _reason(exc)})
        return report

    def _recovery(self) -> float:
        settings = getattr(self.source, "settings", None)
        return float(getattr(settings, "recovery_timeout", 30.0))

    async def acheck(self) -> HealthReport:
        """Check now, on the running event loop."""
        try:
            if isinstance(self.source, str):
                started = time.perf_counter()
                await asyncio.wait_for(self._async_client().ping(), self.timeout)
                seconds = time.perf_counter() - started
                info = await asyncio.wait_for(self._async_client().info("memory"), self.timeout)
                memory = memory_report(info)
            else:
                enqueuer = await self.source.async_enqueuer()
                seconds = await asyncio.wait_for(enqueuer.ping(), self.timeout)
                memory = await asyncio.wait_for(enqueuer.memory(), self.timeout)
        except Exception as exc:
            return HealthReport(False, None, _reason(exc))
        report = _report(seconds, memory)
        keys = getattr(self.source, "keys", None)
        if isinstance(keys, KeyLayout) and not getattr(enqueuer, "in_memory", False):  # not the testing kit's
            try:
                client = self._async_client()
                pipe = _overview_commands(client.pipeline(transaction=False), keys)
                found = await asyncio.wait_for(pipe.execute(), self.timeout)
                oldest = await client.hget(keys.messages, found[3]) if found[3] else None
                report = replace(report, overview=_overview(found, oldest, self._recovery()))
            except Exception as exc:
                report = replace(report, overview={"error": _reason(exc)})
        return report

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The check itself is an ASGI application (any path: route it where you want it)."""
        if scope["type"] != "http":
            return  # lifespan and websockets: nothing to set up, nothing to serve
        method = scope["method"]
        report = await self.acheck() if method in _METHODS else HealthReport(False, None)
        response = report.response(method)
        await send({"type": "http.response.start", "status": response.status, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    #: The ASGI application, by name.
    asgi = __call__

    def wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """A WSGI application answering the check."""
        method = environ.get("REQUEST_METHOD", "GET")
        report = self.check() if method in _METHODS else HealthReport(False, None)
        response = report.response(method)
        reason = {200: "OK", 405: "Method Not Allowed", 503: "Service Unavailable"}[response.status]
        start_response(f"{response.status} {reason}", list(response.headers))
        return [response.body]

    def __repr__(self) -> str:
        source = "Webhook" if not isinstance(self.source, str) else "<redis url>"
        return f"HealthCheck({source}, timeout={self.timeout})"
