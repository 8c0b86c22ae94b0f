"""The Webhook used by the end-to-end tests, configured from the environment.

Each callback appends one JSON line per event to ``$WA_EVENTS`` (O_APPEND, so lines from
several worker processes never interleave).
"""

from __future__ import annotations

import json
import os

import msgspec

from wa_middleware import (
    AllOf,
    BasicAuth,
    Dialog360Signature,
    EventContext,
    HeaderAuth,
    HubSignature256,
    Message,
    Status,
    Webhook,
)

_AUTH = {
    "basic": lambda: BasicAuth("testuser", "testpass"),
    "basic+360dialog": lambda: AllOf(BasicAuth("testuser", "testpass"), Dialog360Signature("partner-secret")),
    "token": lambda: HeaderAuth("X-Webhook-Token", "tok-new", also=["tok-old"]),
    "meta": lambda: HubSignature256("meta-app-secret"),
}

wa = Webhook(
    auth=_AUTH[os.environ.get("WA_AUTH", "basic")](),
    verify_token=os.environ.get("WA_VERIFY_TOKEN") or None,
    broker_url=os.environ["WA_BROKER_URL"],
    namespace=os.environ.get("WA_NAMESPACE", "dramatiq"),
    max_body_size=int(os.environ.get("WA_MAX_BODY", str(1024 * 1024))),
    enqueue_timeout=float(os.environ.get("WA_ENQUEUE_TIMEOUT", "1.0")),
    body_timeout=float(os.environ.get("WA_BODY_TIMEOUT", "10")),
    min_backoff=int(os.environ.get("WA_MIN_BACKOFF", "100")),
    max_retries=int(os.environ.get("WA_MAX_RETRIES", "3")),
)


def record(callback: str, event: object, ctx: EventContext | None = None, **extra: object) -> None:
    line = json.dumps(
        {
            "callback": callback,
            "pid": os.getpid(),
            "event": msgspec.to_builtins(event),
            "ctx": msgspec.to_builtins(ctx) if ctx is not None else None,
            **extra,
        }
    )
    fd = os.open(os.environ["WA_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@wa.on_message("text")
def on_text(message: Message, ctx: EventContext) -> None:
    record("on_text", message, ctx, sender_name=ctx.contact.name if ctx.contact else None)


@wa.on_message()
async def on_any_message(message: Message) -> None:
    record("on_any_message", message, type=message.type)


@wa.on_status()
def on_status(status: Status, ctx: EventContext) -> None:
    record("on_status", status, ctx)


@wa.on_error
def on_error(error: object, ctx: EventContext) -> None:
    record("on_error", error, ctx)


@wa.on_change()
def on_change(change: object, ctx: EventContext) -> None:
    record("on_change", change, ctx)


@wa.on_message("reaction")
def flaky(message: Message) -> None:
    """Fails on its first two tries for every event, to exercise per-callback retries."""
    marker = os.environ["WA_EVENTS"] + f".flaky.{message.id}"
    tries = 1 + (int(open(marker).read()) if os.path.exists(marker) else 0)
    with open(marker, "w") as handle:
        handle.write(str(tries))
    record("flaky", message, attempt=tries)
    if tries <= 2:
        raise RuntimeError(f"flaky failure {tries}")
