"""Callbacks shared by the three example apps: one `Webhook`, decorated functions.

Run them in workers with ``wa-middleware worker examples.callbacks:wa`` (from the project
root), or let an example run them in-process with ``WA_DEV=1`` (``python examples/fastapi_app.py``
does that for you).
"""

from __future__ import annotations

import os
import sys

from wa_middleware import BasicAuth, Error, EventContext, Message, Status, Webhook


def say(line: str) -> None:
    # One write per line: callbacks run on several threads and must not interleave.
    sys.stdout.write(f"[callback] {line}\n")
    sys.stdout.flush()


wa = Webhook(
    # The header 360dialog sends when the webhook is configured with
    # {"headers": {"Authorization": "Basic <base64 of user:pass>"}}.
    auth=BasicAuth(os.environ.get("WA_USER", "testuser"), os.environ.get("WA_PASSWORD", "testpass")),
    path="/webhook",
    broker_url=None,  # WA_BROKER_URL if set, else the embedded Valkey server in ./.wa_middleware
    data_dir=os.environ.get("WA_DATA_DIR", ".wa_middleware"),
)


@wa.on_message("text")
def on_text(message: Message, ctx: EventContext) -> None:
    name = ctx.contact.name if ctx.contact else None
    assert message.text is not None
    say(f"text from {name or message.sender} to {ctx.phone_number_id}: {message.text.body!r}")


@wa.on_message()
def on_any_message(message: Message) -> None:
    if message.type != "text":
        say(f"{message.type} message {message.id}")


@wa.on_status()
async def on_status(status: Status) -> None:
    say(f"message {status.id} is now {status.status}")


@wa.on_status("failed")
def on_failed(status: Status) -> None:
    for error in status.errors or ():
        say(f"delivery failed: {error.code} {error.title} ({error.detail})")


@wa.on_error()
def on_error(error: Error, ctx: EventContext) -> None:
    say(f"WhatsApp reported error {error.code} for {ctx.phone_number_id}: {error.detail}")
