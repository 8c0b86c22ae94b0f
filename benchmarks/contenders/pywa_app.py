"""pywa's FastAPI integration receiving the same deliveries.

``BENCH_PYWA=sync`` uses ``pywa.WhatsApp`` (handlers run in Starlette's thread pool),
``BENCH_PYWA=async`` uses ``pywa_async.WhatsApp`` (handlers run on the event loop). Either
way pywa answers first and runs the handlers as a background task of the same request.

Mode measured: ``validate_updates=False`` (no app secret, no HMAC check); pywa's route still
requires an ``X-Hub-Signature-256`` header, so the load generator sends a dummy one.
``skip_duplicate_updates=False`` because the synthetic traffic repeats its bodies, and a real
sender's does not: with the default, pywa would skip the handlers of every repeated body.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import redis
import redis.asyncio as aredis
from fastapi import FastAPI

from ._settings import RECORD_KEY, REDIS_URL, SLEEP_MS

FLAVOUR = os.environ.get("BENCH_PYWA", "async")
PHONE_ID = "106540352242922"  # the phone_number_id in the synthetic deliveries' metadata

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
_options: dict[str, Any] = {
    "phone_id": PHONE_ID,
    "token": "bench-token",
    "server": app,
    "webhook_endpoint": "/webhook",
    "verify_token": "bench-verify",
    "validate_updates": False,
    "skip_duplicate_updates": False,
}

if FLAVOUR == "async":
    from pywa_async import WhatsApp as AsyncWhatsApp  # type: ignore[attr-defined]

    wa: Any = AsyncWhatsApp(**_options)
    _aclient: list[aredis.Redis] = []

    async def _handle(event_id: str) -> None:
        if SLEEP_MS:
            await asyncio.sleep(SLEEP_MS / 1000)
        if RECORD_KEY:
            if not _aclient:
                _aclient.append(aredis.Redis.from_url(REDIS_URL))
            await _aclient[0].sadd(RECORD_KEY, event_id)

    @wa.on_message()  # type: ignore[untyped-decorator]
    async def on_message(client: Any, message: Any) -> None:
        await _handle(message.id)

    @wa.on_message_status()  # type: ignore[untyped-decorator]
    async def on_status(client: Any, status: Any) -> None:
        await _handle(status.id)

elif FLAVOUR == "sync":
    from pywa import WhatsApp  # type: ignore[attr-defined]

    wa = WhatsApp(**_options)
    _local = threading.local()

    def _handle_sync(event_id: str) -> None:
        if SLEEP_MS:
            time.sleep(SLEEP_MS / 1000)
        if RECORD_KEY:
            client = getattr(_local, "client", None)
            if client is None:
                client = _local.client = redis.Redis.from_url(REDIS_URL)
            client.sadd(RECORD_KEY, event_id)

    @wa.on_message()  # type: ignore[untyped-decorator]
    def on_message_sync(client: Any, message: Any) -> None:
        _handle_sync(message.id)

    @wa.on_message_status()  # type: ignore[untyped-decorator]
    def on_status_sync(client: Any, status: Any) -> None:
        _handle_sync(status.id)

else:
    raise RuntimeError(f"BENCH_PYWA must be 'sync' or 'async', not {FLAVOUR!r}")
