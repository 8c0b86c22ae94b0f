"""A recording Webhook for the replay tests; callbacks append to a module-level list."""

from __future__ import annotations

import os

from wa_middleware import BasicAuth, Message, Status, Webhook

wa = Webhook(
    auth=BasicAuth("u", "p"),
    broker_url=os.environ.get("WA_BROKER_URL", "redis://127.0.0.1:6379/0"),
    namespace=os.environ.get("WA_NAMESPACE", "dramatiq"),
    record=True,
    record_max_count=1000,
)
seen: list[tuple[str, str | None]] = []


@wa.on_message("text")
def on_text(message: Message) -> None:
    seen.append(("text", message.id))


@wa.on_status()
def on_status(status: Status) -> None:
    if status.status == "failed":
        raise RuntimeError("still broken")
    seen.append(("status", status.id))
