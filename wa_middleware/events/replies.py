"""Where a running callback's replies go: the seam between `EventContext.reply` and the messaging client.

`EventContext` is a plain record carried between processes, so it cannot hold a client. Whoever
runs a callback (the worker, the testing kit) sets `current` around the call to an object with
``reply``, ``react``, ``mark_read`` and ``send`` (`wa_middleware.messaging.Replies`, or the kit's
recorder); ``ctx.reply(...)`` finds it there. A context variable, so concurrent callbacks on other
threads (and async callbacks, whose coroutine gets the caller's value) never see each other's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

__all__ = ["addressee", "current", "using"]

_current: ContextVar[Any] = ContextVar("wa_middleware_replies", default=None)


def current() -> Any:
    """The replies of the running callback.

    :raises RuntimeError: outside a callback, or when the webhook has no API keys to send with.
    """
    replies = _current.get()
    if replies is None:
        raise RuntimeError(
            "ctx.reply(), ctx.react() and ctx.mark_read() work inside a callback of a Webhook configured with "
            "api_keys=... (or in wa_middleware.testing.run, which records them)"
        )
    return replies


@contextlib.contextmanager
def using(replies: Any) -> Iterator[Any]:
    """Make ``replies`` the current callback's for the duration of the block."""
    token = _current.set(replies)
    try:
        yield replies
    finally:
        _current.reset(token)


def addressee(event: Any) -> tuple[str | None, str | None, str | None]:
    """Where a callback's replies to ``event`` (an `Event`: not imported, `models` imports this module)
    go: (the business number it arrived on, the user, and
    the message replied to). A message's user is its sender; a status's, its recipient (no message)."""
    data: Any = event.data
    if event.kind == "message":
        return event.ctx.phone_number_id, getattr(data, "sender", None), getattr(data, "id", None)
    return event.ctx.phone_number_id, getattr(data, "recipient_id", None), None
