"""The registry of user callbacks and how an event finds the ones it should run."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from .decode import Event, EventKind
from .errors import ConfigurationError

__all__ = ["Callback", "Registry", "run_coroutine"]

AnyCallable = Callable[..., Any]


def _wants_ctx(fn: AnyCallable) -> bool:
    """A callback takes the context when it accepts a second positional argument."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    if not positional:
        raise ConfigurationError(f"callback {fn!r} must accept the event as its first argument")
    return len(positional) >= 2


@dataclass(frozen=True, eq=False)
class Callback:
    """One registered callback.

    :ivar name: unique name (``module.qualname`` unless given), used for retries and dead letters.
    :ivar kind: the event kind it listens to.
    :ivar values: message types, status values, error codes or change fields it accepts; None for all.
    :ivar ordered: run in conversation order; None: the `Webhook`'s default.
    """

    name: str
    kind: EventKind
    fn: AnyCallable
    values: frozenset[str] | None
    is_async: bool
    wants_ctx: bool
    ordered: bool | None = None

    def matches(self, event: Event) -> bool:
        if event.kind != self.kind:
            return False
        if self.values is None:
            return True
        return _selector(event) in self.values

    def __call__(self, event: Event) -> Any:
        args = (event.data, event.ctx) if self.wants_ctx else (event.data,)
        if self.is_async:
            return run_coroutine(self.fn(*args))
        return self.fn(*args)


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
    ) -> Callback:
        if not callable(fn):
            raise ConfigurationError(f"{fn!r} is not callable")
        if ordered is not None and not isinstance(ordered, bool):
            raise ConfigurationError(f"ordered must be True, False or None, not {ordered!r}")
        for value in values:
            if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
                raise ConfigurationError(f"invalid filter value {value!r} for on_{kind}()")
        cb_name = name or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        if cb_name in self.by_name:
            raise ConfigurationError(f"a callback named {cb_name!r} is already registered; pass name=...")
        callback = Callback(
            name=cb_name,
            kind=kind,
            fn=fn,
            values=frozenset(str(v) for v in values) or None,
            is_async=inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)),
            wants_ctx=_wants_ctx(fn),
            ordered=ordered,
        )
        self.callbacks.append(callback)
        self.by_name[cb_name] = callback
        return callback

    def matching(self, event: Event) -> list[Callback]:
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


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an async callback to completion from a worker thread."""
    return asyncio.run_coroutine_threadsafe(coro, _background_loop()).result()
