"""The Webhook the ordering benchmark runs in its worker process, configured from the environment."""

from __future__ import annotations

import os
import random
import time

from wa_middleware import EventContext, Message, NoAuth, Status, Webhook

_ordered = os.environ.get("WA_BENCH_ORDERED", "0") == "1"
_sleep_ms = float(os.environ.get("WA_BENCH_SLEEP_MS", "0"))
_kwargs = {"ordered": True} if _ordered else {}

wa = Webhook(
    auth=NoAuth(),
    broker_url=os.environ["WA_BROKER_URL"],
    namespace=os.environ["WA_NAMESPACE"],
    **_kwargs,  # type: ignore[arg-type]
)


@wa.on_message()
def on_message(message: Message, ctx: EventContext) -> None:
    if _sleep_ms:
        time.sleep(random.random() * _sleep_ms / 1000)


@wa.on_status()
def on_status(status: Status) -> None:
    if _sleep_ms:
        time.sleep(random.random() * _sleep_ms / 1000)
