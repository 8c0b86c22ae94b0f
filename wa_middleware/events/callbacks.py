"""The registry of user callbacks and how an event finds the ones it should run.

Ordering rule: the callbacks that match one event run in registration order (the order in
which the decorators were applied, i.e. top to bottom in a module). A callback stops the later
ones for that event by raising `StopPropagation`; that is not a failure and is never retried.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from .decode import Event, EventKind
from .filters import Predicate, compile_filters, wants_ctx

__all__ = ["Callback", "Registry", "StopPropagation", "run_coroutine"]

AnyCallable = Callable[..., Any]


class StopPropagation(Exception):
    """Raise in a callback to keep the callbacks registered after it from running on this event.

    The callback itself counts as successful. Callbacks that already ran are not affected, and
    the event's other callbacks that were registered earlier have run already.
    """


@dataclass(frozen=True, eq=False)
class Callback:
    """One registered callback.

    :ivar name: unique name (``module.qualname`` unless given), used for retries and dead letters.
    :ivar kind: the event kind it listens to.
    :ivar values: message types, status values, error codes or change fields it accepts; None for all.
    :ivar filters: the compiled keyword filters; all must hold.
    :ivar ordered: run in conversation order; None: the `Webhook`'s default.
    """

    name: str
    kind: EventKind
    fn: AnyCallable
    values: frozenset[str] | None
    is_async: bool
    wants_ctx: bool
    filters: tuple[Predicate, ...] = ()
    ordered: bool | None = None

    def matches(self, event: Event) -> bool:
        """Whether this callback should run on ``event`` (kind, positional values, then keyword filters)."""
        if event.kind != self.kind:
            return False
        if self.values is not None and _selector(event) not in self.values:
            return False
        for predicate in self.filters:
            if not predicate(event):
                return False
        return True

    def __call__(self, event: Event) -> bool:
        """Run the callback on ``event``; True when it raised `StopPropagation` (a success that
        ends the event's later callbacks: `wa_middleware.events.run.run_callbacks` acts on it)."""
        args = (event.data, event.ctx) if self.wants_ctx else (event.data,)
        try:
            if self.is_async:
                run_coroutine(self.fn(*args))
            else:
                self.fn(*args)
        except StopPropagation:
            return True
        return False


def _selector(event: Event) -> str | None:
    data: Any = event.data
    if event.kind == "message":
        return data.type  # type: ignore[no-any-return]
    if event.kind == "status":
        return data.status  # type: ignore[no-any-return]
    if event.kind == "error":
        return None if data.code is None else str(data.code)
    return data.field  # type: ignore[no-any-return]


class Registry:
    """Callbacks in registration order: that is the order they run in for one event."""

    def __init__(self) -> None:
        self.callbacks: list[Callback] = []
        self.by_name: dict[str, Callback] = {}

    def add(
        self,
        kind: EventKind,
        fn: AnyCallable,
        values: Collection[str | int],
        name: str | None,
        *,
        ordered: bool | None = None,
        **filters: Any,
    ) -> Callback:
        """Register ``fn``; ``filters`` are the keyword filters of `compile_filters`.

        :param ordered: run in conversation order; None: the `Webhook`'s default.
        :raises ConfigurationError: for a non-callable, a duplicate name or an invalid filter.
        """
        if not callable(fn):
            raise ConfigurationError(f"{fn!r} is not callable")
        if ordered is not None and not isinstance(ordered, bool):
            raise ConfigurationError(f"ordered must be True, False or None, not {ordered!r}")
        accepted, predicates = compile_filters(kind, values, **filters)
        cb_name = name or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        if cb_name in self.by_name:
            raise ConfigurationError(f"a callback named {cb_name!r} is already registered; pass name=...")
        callback = Callback(
            name=cb_name,
            kind=kind,
            fn=fn,
            values=accepted,
            is_async=inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__),
            wants_ctx=wants_ctx(fn),
            filters=predicates,
            ordered=ordered,
        )
        self.callbacks.append(callback)
        self.by_name[cb_name] = callback
        return callback

    def matching(self, event: Event) -> list[Callback]:
        """The callbacks to run on ``event``, in registration order; run them with
        `wa_middleware.events.run.run_callbacks`, which honours `StopPropagation`."""
        return [cb for cb in self.callbacks if cb.matches(event)]


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker process, in its own thread, shared by all async callbacks,
    so clients a callback caches (HTTP sessions, pools) stay on the loop they were made on."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="wa-middleware-asyncio", daemon=True).start()
            _loop = loop
        return _loop


async def _in_context(context: contextvars.Context, coro: Coroutine[Any, Any, Any]) -> Any:
    for var, value in context.items():
        var.set(value)
    return await coro


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an async callback to completion from a worker thread."""
    # The loop's thread has its own context: hand the caller's (the running callback's replies) over.
    future = asyncio.run_coroutine_threadsafe(_in_context(contextvars.copy_context(), coro), _background_loop())
    try:
        return future.result()
    except BaseException:
        # Interrupted (dramatiq's time limit, shutdown): stop the coroutine too, so its retry
        # never runs alongside a copy still going on the loop.
        future.cancel()
        raise
