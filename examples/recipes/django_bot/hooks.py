"""The `Webhook` and its callbacks, which use the Django ORM.

This module imports the models, so Django must be set up before it is imported: the web entry
points (``wsgi.py``, ``asgi.py``) do it through ``get_wsgi_application()`` /
``get_asgi_application()``, the worker through ``worker.py``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from django.db import close_old_connections

from examples.recipes.django_bot.inbox.models import InboundMessage, StatusUpdate
from wa_middleware import BasicAuth, EventContext, Message, Status, Webhook

F = TypeVar("F", bound=Callable[..., Any])

wa = Webhook(
    auth=BasicAuth(os.environ.get("WA_USER", "360dialog"), os.environ.get("WA_PASSWORD", "s3cret")),
    path="/webhook",  # exactly the path of the URL given to 360dialog: "/webhook/" would be another path
    broker_url=None,  # WA_BROKER_URL, else the embedded server (dev)
    namespace=os.environ.get("WA_NAMESPACE", "dramatiq"),
    data_dir=os.environ.get("WA_DATA_DIR", ".wa_middleware"),  # the embedded server's, when it runs
)


def uses_db(fn: F) -> F:
    """Django closes stale database connections around each request; a worker thread serves no
    request, so do it around each callback (a connection the database dropped is replaced)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return wrapper  # type: ignore[return-value]


@wa.on_message("text")
@uses_db
def store_text(message: Message, ctx: EventContext) -> None:
    # A sync callback: the ORM's sync API is for threads like the worker's. In an async callback
    # use its async API (``await InboundMessage.objects.aupdate_or_create(...)``).
    assert message.text is not None and message.id is not None
    InboundMessage.objects.update_or_create(
        wamid=message.id,
        defaults={
            "sender": message.sender or "",
            "sender_name": ctx.sender_name or "",
            "body": message.text.body,
            "received_at": datetime.fromtimestamp(int(message.timestamp or 0), tz=timezone.utc),
        },
    )


@wa.on_status()
@uses_db
def track_status(status: Status) -> None:
    assert status.id is not None and status.status is not None
    code = status.error.code if status.error is not None else None
    StatusUpdate.objects.update_or_create(wamid=status.id, defaults={"status": status.status, "error_code": code})
