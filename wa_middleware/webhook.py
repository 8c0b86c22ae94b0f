"""`Webhook`: configuration, callback decorators, and the lazily bound broker and workers."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .errors import ConfigurationError
from .events.callbacks import Registry
from .events.decode import Event, EventKind, decode_delivery
from .events.filters import StrFilter, compile_filters
from .events.run import pairs, run_all
from .keys import KeyLayout
from .redis_url import parse as parse_url
from .settings import WorkerSettings
from .web import routes
from .web.auth import AllOf, Auth, BasicAuth, NoAuth
from .web.core import Core
from .web.embedded import DEFAULT_DATA_DIR, ensure_server
from .web.enqueue import AsyncEnqueuer, Recording, SyncEnqueuer

if TYPE_CHECKING:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    from .worker.broker import Runtime
    from .worker.dispatch import Dispatcher

__all__ = ["Webhook"]

logger = logging.getLogger("wa_middleware")

F = TypeVar("F", bound=Callable[..., Any])


class Webhook:
    """A WhatsApp webhook endpoint: what to accept, where to store it, which callbacks to run.

    :param auth: how deliveries authenticate, e.g. ``BasicAuth("user", "pass")`` (or the tuple
        ``("user", "pass")``); a list of schemes means all of them (`AllOf`). Required: pass ``NoAuth()`` to accept
        unauthenticated deliveries knowingly.
    :param path: the path the middleware serves (``POST``; ``GET`` only for Meta's handshake).
    :param broker_url: Redis URL of the dramatiq broker: ``redis://``, ``rediss://`` (TLS),
        ``unix://`` or ``redis+sentinel://`` (`wa_middleware.redis_url`). None: ``WA_BROKER_URL``,
        else the embedded Valkey server kept in ``data_dir``.
    :param max_body_size: body cap in bytes; larger bodies get a 413.
    :param enqueue_timeout: seconds Redis has to acknowledge a delivery before the answer is a 503.
    :param body_timeout: seconds a client has to send the whole body (408 after that; WSGI: under gunicorn).
    :param verify_token: answer Meta's subscription handshake (``GET path?hub.mode=subscribe...``)
        when ``hub.verify_token`` equals this; without it a GET is a 405.
    :param queue_name: the dramatiq queue deliveries go to.
    :param namespace: dramatiq's Redis key prefix.
    :param max_retries: retries of a failing callback before it is dead-lettered.
    :param min_backoff: first retry delay in milliseconds (doubles each time, with jitter).
    :param max_backoff: the longest retry delay in milliseconds.
    :param dev: run worker threads inside the web process (also ``WA_DEV=1``), for development.
    :param data_dir: where the embedded server keeps its data.
    :param name: prefix of the dramatiq actor names; give two Webhooks on one broker different names.
    :param health_path: also answer a broker health check (GET, 200/503 JSON) on this path; off when None.
    :param metrics_path: also serve Prometheus metrics on this path (needs the ``metrics`` extra); off when None.
    :param record: also keep every accepted delivery, raw, in a Redis stream (written in the same
        round trip as its queue message), for ``wa-middleware replay``.
    :param record_max_count: deliveries kept at most (approximate trimming).
    :param record_max_age: seconds a recorded delivery is kept at most.
    :param ordered: default of ``ordered=`` for callbacks that do not say: run the callbacks of one
        conversation one at a time, in the order the deliveries were stored (see `dedupe.conversation_key`).
    :param dedupe_ttl: seconds an event is remembered to run its callbacks once (default 7 days,
        the sender's redelivery window).
    :param skip_stale_statuses: skip a status update older than one already handled for the same
        message (``delivered`` after ``read``); skipped ones are counted (``stats()["stale_statuses"]``).
    :param recovery_timeout: seconds without a heartbeat after which a worker counts as dead and its
        unfinished messages run again elsewhere (within about 7/6 of this).
    :param api_keys: what callbacks send with (``ctx.reply``, ``ctx.react``, ``ctx.mark_read``): a
        360dialog API key, a mapping ``phone number id -> key or endpoint``, or a callable taking the
        phone number id (see `wa_middleware.messaging.Credentials`; needs the ``reply`` extra).
        Keys are never logged.
    :param send_rate: messages a second per number, shared by all worker processes (Cloud API's
        default tier: 80); None: no limit of our own.
    :param replicas: answer 200 only once this many replicas have the delivery too (Redis ``WAIT``,
        within half of ``enqueue_timeout``; fewer in time is a 503, and the sender redelivers). With
        0, a failover to a replica that lagged loses what it had not received yet.
    """

    def __init__(
        self,
        *,
        auth: Auth | list[Auth] | tuple[Auth, ...] | tuple[str, str] | None = None,
        path: str = "/webhook",
        broker_url: str | None = None,
        max_body_size: int = 1024 * 1024,
        enqueue_timeout: float = 2.0,
        body_timeout: float = 10.0,
        verify_token: str | None = None,
        queue_name: str = "wa_middleware",
        namespace: str = "dramatiq",
        max_retries: int = 5,
        min_backoff: int = 5_000,
        max_backoff: int = 3_600_000,
        dev: bool | None = None,
        data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
        name: str = "wa",
        health_path: str | None = None,
        metrics_path: str | None = None,
        record: bool = False,
        record_max_count: int = 100_000,
        record_max_age: float = 86_400.0,
        ordered: bool = False,
        dedupe_ttl: float = 7 * 86400,
        recovery_timeout: float = 30.0,
        skip_stale_statuses: bool = False,
        replicas: int = 0,
        api_keys: Any = None,
        send_rate: float | None = None,
    ) -> None:
        if auth is None:
            raise ConfigurationError(
                "Webhook needs auth=BasicAuth(user, password) (or another scheme); pass auth=NoAuth() to opt out"
            )
        if isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(part, str) for part in auth):
            auth = BasicAuth(*auth)  # ("user", "password"), as testing.post and httpx take it
        if isinstance(auth, (list, tuple)):
            try:
                auth = AllOf(*auth)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        if not isinstance(auth, Auth):
            raise ConfigurationError(f"auth must be an auth scheme such as BasicAuth, not {auth!r}")
        if not path.startswith("/"):
            raise ConfigurationError(f"path must start with '/': {path!r}")
        if max_body_size <= 0:
            raise ConfigurationError("max_body_size must be positive")
        if not 0 < enqueue_timeout < 5:
            raise ConfigurationError("enqueue_timeout must be between 0 and 5 s (the sender gives up at 5 s)")
        if not 0 < body_timeout <= 60:
            raise ConfigurationError("body_timeout must be between 0 and 60 s")
        if verify_token is not None and (not isinstance(verify_token, str) or not verify_token):
            raise ConfigurationError("verify_token must be a non-empty str")
        if max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0")
        if record and (record_max_count <= 0 or record_max_age <= 0):
            raise ConfigurationError("record_max_count and record_max_age must be positive")
        routes.check_paths(path, health_path, metrics_path)
        if dedupe_ttl <= 0:
            raise ConfigurationError("dedupe_ttl must be positive")
        if not isinstance(replicas, int) or replicas < 0:
            raise ConfigurationError("replicas must be an int >= 0")
        if not 1 <= recovery_timeout <= 3600:
            raise ConfigurationError("recovery_timeout must be between 1 and 3600 seconds")
        if isinstance(auth, NoAuth):
            logger.warning("wa-middleware: auth is disabled (NoAuth): anyone can post deliveries")
        self.auth = auth
        self.path = path
        self.record = record
        self.health_path = health_path
        self.metrics_path = metrics_path
        self.name = name
        self.queue_name = queue_name
        self.namespace = namespace
        self.data_dir = data_dir
        self.replicas = replicas
        self.credentials: Any = None
        if api_keys is not None:
            try:
                from .messaging import Credentials
            except ImportError:
                raise ConfigurationError("api_keys needs httpx: pip install 'wa-middleware[reply]'") from None
            self.credentials = Credentials.of(api_keys)
        if send_rate is not None and send_rate <= 0:
            raise ConfigurationError("send_rate must be positive (messages a second per number)")
        self.send_rate = send_rate
        #: Every Redis key name (shared with the worker, the Lua scripts and the tooling).
        self.keys = KeyLayout(namespace=namespace, queue_name=queue_name, name=name)
        #: How the worker runs callbacks.
        self.settings = WorkerSettings(
            name=name,
            queue_name=queue_name,
            ordered=ordered,
            dedupe_ttl=dedupe_ttl,
            max_retries=max_retries,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            skip_stale_statuses=skip_stale_statuses,
            recovery_timeout=recovery_timeout,
        )
        self.recording = Recording(self.keys.recorded, record_max_count, record_max_age) if record else None
        self.dev = dev if dev is not None else os.environ.get("WA_DEV", "") not in ("", "0", "false")
        self._broker_url = broker_url or os.environ.get("WA_BROKER_URL") or None
        if self._broker_url is not None:
            parse_url(self._broker_url)  # a mistake in it fails here, not at the first request
        self.core = Core(
            path=path,
            auth=auth,
            max_body_size=max_body_size,
            queue_name=queue_name,
            actor_name=self.settings.dispatch_actor,
            enqueue_timeout=enqueue_timeout,
            body_timeout=body_timeout,
            verify_token=verify_token,
        )
        self.registry = Registry()
        self._lock = threading.RLock()
        self._async_enqueuers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEnqueuer] = (
            weakref.WeakKeyDictionary()
        )
        #: The last loop asked for (weakly) and its enqueuer: a process serves from one loop, and this
        #: spares each request the weak dictionary's look-up (a weak reference made per call).
        self._last_enqueuer: tuple[weakref.ref[asyncio.AbstractEventLoop], AsyncEnqueuer] | None = None
        self._sync_enqueuer: SyncEnqueuer | None = None
        self._runtime: Runtime | None = None

    # The worker's settings, by name, as before they were grouped.
    ordered = property(lambda self: self.settings.ordered)
    max_retries = property(lambda self: self.settings.max_retries)
    min_backoff = property(lambda self: self.settings.min_backoff)
    max_backoff = property(lambda self: self.settings.max_backoff)
    dedupe_ttl = property(lambda self: self.settings.dedupe_ttl)
    recovery_timeout = property(lambda self: self.settings.recovery_timeout)
    dispatch_actor_name = property(lambda self: self.settings.dispatch_actor)
    callback_actor_name = property(lambda self: self.settings.callback_actor)

    # -- configuration -------------------------------------------------------------------

    @property
    def broker_url(self) -> str:
        """The broker's URL, starting the embedded server on first use when none is configured."""
        if self._broker_url is None:
            with self._lock:
                if self._broker_url is None:
                    self._broker_url = ensure_server(self.data_dir)
        return self._broker_url

    # -- decorators ----------------------------------------------------------------------

    def _decorator(
        self,
        kind: EventKind,
        values: tuple[Any, ...],
        name: str | None,
        filters: dict[str, Any],
        ordered: bool | None = None,
    ) -> Any:
        filters = {key: value for key, value in filters.items() if value is not None}
        if len(values) == 1 and callable(values[0]) and not isinstance(values[0], str):  # used bare: @wa.on_message
            self.registry.add(kind, values[0], (), name, ordered=ordered, **filters)
            return values[0]
        # Validate now, so a bad filter fails where the decorator is written, even before it is applied.
        compile_filters(kind, values, **filters)

        def register(fn: F) -> F:
            self.registry.add(kind, fn, values, name, ordered=ordered, **filters)
            return fn

        return register

    @overload
    def on_message(self, fn: F, /) -> F: ...
    @overload
    def on_message(
        self,
        *types: str,
        name: str | None = None,
        phone_number_id: StrFilter | None = None,
        waba_id: StrFilter | None = None,
        sender: StrFilter | None = None,
        text: StrFilter | None = None,
        text_prefix: StrFilter | None = None,
        text_regex: str | re.Pattern[str] | None = None,
        reply_id: StrFilter | None = None,
        error_code: int | str | Iterable[int | str] | None = None,
        when: Callable[..., bool] | None = None,
        ordered: bool | None = None,
    ) -> Callable[[F], F]: ...
    def on_message(
        self,
        *types: Any,
        name: str | None = None,
        phone_number_id: StrFilter | None = None,
        waba_id: StrFilter | None = None,
        sender: StrFilter | None = None,
        text: StrFilter | None = None,
        text_prefix: StrFilter | None = None,
        text_regex: str | re.Pattern[str] | None = None,
        reply_id: StrFilter | None = None,
        error_code: int | str | Iterable[int | str] | None = None,
        when: Callable[..., bool] | None = None,
        ordered: bool | None = None,
    ) -> Any:
        """Run the decorated callback for incoming messages of the given types (all types if none).

        ``@wa.on_message()`` also receives messages of types not known to this version,
        with their payload in ``message.raw``. Keyword filters narrow it further; all must hold,
        and each takes one value or a collection of values (any of them):

        :param name: the callback's unique name (default ``module.qualname``).
        :param phone_number_id: the receiving business number(s) (``metadata.phone_number_id``).
        :param waba_id: the WhatsApp Business Account(s) (``entry[].id``).
        :param sender: the sender's phone number(s) or business-scoped user id(s).
        :param text: exact body of a text message (implies type ``"text"``).
        :param text_prefix: start of the body of a text message (implies type ``"text"``).
        :param text_regex: a pattern searched (``re.search``) in the body of a text message.
        :param reply_id: the id of the interactive button or list row, or a template button's
            payload (implies types ``"interactive"`` and ``"button"``).
        :param error_code: a code among the message's ``errors``.
        :param when: any predicate, called as ``when(message)`` or ``when(message, ctx)``.
        :raises ConfigurationError: at decoration time, for an invalid filter.
        """
        filters = dict(
            phone_number_id=phone_number_id, waba_id=waba_id, sender=sender, text=text, text_prefix=text_prefix,
            text_regex=text_regex, reply_id=reply_id, error_code=error_code, when=when,
        )  # fmt: skip
        return self._decorator("message", types, name, filters, ordered)

    @overload
    def on_status(self, fn: F, /) -> F: ...
    @overload
    def on_status(
        self,
        *statuses: str,
        name: str | None = None,
        phone_number_id: StrFilter | None = None,
        waba_id: StrFilter | None = None,
        recipient: StrFilter | None = None,
        error_code: int | str | Iterable[int | str] | None = None,
        when: Callable[..., bool] | None = None,
        ordered: bool | None = None,
    ) -> Callable[[F], F]: ...
    def on_status(
        self,
        *statuses: Any,
        name: str | None = None,
        phone_number_id: StrFilter | None = None,
        waba_id: StrFilter | None = None,
        recipient: StrFilter | None = None,
        error_code: int | str | Iterable[int | str] | None = None,
        when: Callable[..., bool] | None = None,
        ordered: bool | None = None,
    ) -> Any:
        """Run the decorated callback for status updates with these values (all if none).

        :param recipient: the recipient's phone number(s) or business-scoped user id(s).
        :param error_code: a code among the status's ``errors`` (of a ``failed`` status).

        ``name``, ``phone_number_id``, ``waba_id`` and ``when`` as for `on_message`.
        """
        filters = dict(
            phone_number_id=phone_number_id, waba_id=waba_id, recipient=recipient, error_code=error_code, when=when
        )
        return self._decorator("status", statuses, name, filters, ordered)

    @overload
    def on_error(self, fn: F, /) -> F: ...
    @overload
    def on_error(
        self,
        *codes: int | str,
        name: str | None = None,
        phone_number_id: StrFilter | None = None,
        waba_id: StrFilter | None = None,
        when: Callable[..., bool] | None = None,
        ordered: bool | None = None,
    ) -> Callable[[F], F]: ...
    def on_error(
        self,
        *codes: Any,
        name: str | None = None,
        phone_number_id: StrFilter | None = None,
        waba_id: StrFilter | None = None,
        when: Callable[..., bool] | None = None,
        ordered: bool | None = None,
    ) -> Any:
        """Run the decorated callback for value-level errors with these codes (all if none).

        ``name``, ``phone_number_id``, ``waba_id`` and ``when`` as for `on_message`.
        """
        filters = dict(phone_number_id=phone_number_id, waba_id=waba_id, when=when)
        return self._decorator("error", codes, name, filters, ordered)

    @overload
    def on_change(self, fn: F, /) -> F: ...
    @overload
    def on_change(
        self,
        *fields: str,
        name: str | None = None,
        phone_number_id: StrFilter | None = None,
        waba_id: StrFilter | None = None,
        event: StrFilter | None = None,
        when: Callable[..., bool] | None = None,
        ordered: bool | None = None,
    ) -> Callable[[F], F]: ...
    def on_change(
        self,
        *fields: Any,
        name: str | None = None,
        phone_number_id: StrFilter | None = None,
        waba_id: StrFilter | None = None,
        event: StrFilter | None = None,
        when: Callable[..., bool] | None = None,
        ordered: bool | None = None,
    ) -> Any:
        """Run the decorated callback for changes of these ``field`` values (all non-message fields if none).

        :param event: the change value's ``event`` (``"APPROVED"``, ``"ACCOUNT_VIOLATION"``...).

        ``name``, ``phone_number_id``, ``waba_id`` and ``when`` as for `on_message`.
        """
        filters = dict(phone_number_id=phone_number_id, waba_id=waba_id, event=event, when=when)
        return self._decorator("change", fields, name, filters, ordered)

    # -- request path --------------------------------------------------------------------

    async def async_enqueuer(self) -> AsyncEnqueuer:
        """The enqueuer of the running event loop (Redis asyncio connections are bound to one loop)."""
        loop = asyncio.get_running_loop()
        last = self._last_enqueuer
        if last is not None and last[0]() is loop:
            return last[1]
        enqueuer = self._async_enqueuers.get(loop)
        if enqueuer is None:
            # First use: starting the embedded server or the dev worker blocks, so not on the loop.
            url = await asyncio.to_thread(self._prepare)
            enqueuer = self._async_enqueuers.get(loop)
            if enqueuer is None:
                enqueuer = AsyncEnqueuer(
                    url,
                    keys=self.keys,
                    timeout=self.core.enqueue_timeout,
                    recording=self.recording,
                    replicas=self.replicas,
                )
                self._async_enqueuers[loop] = enqueuer
        self._last_enqueuer = (weakref.ref(loop), enqueuer)
        return enqueuer

    async def aclose(self) -> None:
        """Close the Redis connections of the running loop's enqueuer (ASGI shutdown, tests)."""
        self._last_enqueuer = None
        enqueuer = self._async_enqueuers.pop(asyncio.get_running_loop(), None)
        if enqueuer is not None:
            await enqueuer.aclose()

    def close(self) -> None:
        """Close the WSGI enqueuer and the broker's connections, and stop the dev worker, if any."""
        if self._sync_enqueuer is not None:
            self._sync_enqueuer.close()
            self._sync_enqueuer = None
        if self._runtime is not None:
            self._runtime.close()

    def _prepare(self) -> str:
        url = self.broker_url
        self._maybe_start_dev_worker()
        return url

    def sync_enqueuer(self) -> SyncEnqueuer:
        """The enqueuer used by the WSGI adapter (thread-safe)."""
        if self._sync_enqueuer is None:
            with self._lock:
                if self._sync_enqueuer is None:
                    self._sync_enqueuer = SyncEnqueuer(
                        self.broker_url,
                        keys=self.keys,
                        timeout=self.core.enqueue_timeout,
                        recording=self.recording,
                        replicas=self.replicas,
                    )
            self._maybe_start_dev_worker()
        return self._sync_enqueuer

    # -- worker side ---------------------------------------------------------------------

    @property
    def runtime(self) -> Runtime:
        """The worker side (broker, dispatcher, actors), built on first use: a web process that
        never asks for it never imports dramatiq."""
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    from .worker.broker import Runtime

                    runtime = Runtime(
                        url=self.broker_url, registry=self.registry, settings=self.settings, keys=self.keys
                    )
                    if self.credentials is not None:
                        runtime.dispatcher.around = self._replies_factory(runtime.broker.client)
                    self._runtime = runtime
        return self._runtime

    def _replies_factory(self, client: Any) -> Any:
        """What the worker enters around each callback: the run's `Replies`, recorded in Redis."""
        import time

        from .events.replies import addressee, using
        from .messaging import Client, RateLimiter, Replies, SendLedger

        limiter = RateLimiter(client, per_second=self.send_rate, prefix=self.keys.prefix) if self.send_rate else None
        sender = Client(self.credentials, rate_limiter=limiter)
        ledger = SendLedger(client, prefix=self.keys.prefix, ttl=self.settings.dedupe_ttl)

        def around(unit: Any) -> Any:
            number, to, message_id = addressee(unit.event)
            replies = Replies(sender, ledger, f"{unit.key}|{unit.callback.name}", number, to, message_id,
                              deadline=time.monotonic() + 600 - 30)  # fmt: skip
            return using(replies)

        return around

    @property
    def broker(self) -> RedisBroker:
        """The dramatiq broker with this webhook's actors declared on it; built on first use."""
        return self.runtime.broker

    @property
    def dispatcher(self) -> Dispatcher:
        """The worker's dispatcher (plans, runs and finishes deliveries)."""
        return self.runtime.dispatcher

    def dispatch(self, body: bytes, *, delivery_id: str | None = None, received_at: int | None = None) -> list[Event]:
        """Decode a delivery and run every matching callback of every event, in order, in this thread.

        No deduplication and no ordering: this is the synchronous entry point for tests and tools.
        It runs through the worker's callback loop (`wa_middleware.events.run`): a callback that
        raises does not stop the others; the first error is raised at the end.
        """
        events = decode_delivery(body, delivery_id=delivery_id, received_at=received_at)
        report = run_all(pairs(self.registry, events))
        for outcome in report.failures:
            name, kind = outcome.item.callback.name, outcome.item.event.kind
            logger.warning("callback %s failed on a %s event (%s)", name, kind, type(outcome.error).__name__)
        report.raise_first()
        return events

    def stats(self) -> dict[str, int]:
        """Worker counters kept in Redis: ``duplicates`` skipped, ``dead_lettered``, ``stale_statuses`` skipped."""
        return self.runtime.stats()

    # -- dev mode ------------------------------------------------------------------------

    def _maybe_start_dev_worker(self) -> None:
        if self.dev and (self._runtime is None or self._runtime._worker is None):
            self.start_dev_worker()

    def start_dev_worker(self, threads: int = 2) -> dramatiq.Worker:
        """Run worker threads in this process: one command runs the app and its callbacks."""
        import atexit

        with self._lock:
            runtime = self.runtime
            if runtime._worker is None:
                worker = runtime.start_worker(threads)
                atexit.register(worker.stop)
                logger.warning("wa-middleware: dev mode, %d worker threads run callbacks in this process", threads)
            assert runtime._worker is not None
            return runtime._worker

    def stop_dev_worker(self) -> None:
        if self._runtime is not None:
            self._runtime.stop_worker()

    def __repr__(self) -> str:
        return f"Webhook(path={self.path!r}, auth={self.auth!r}, callbacks={len(self.registry.callbacks)})"
