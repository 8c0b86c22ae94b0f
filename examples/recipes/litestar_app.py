"""Litestar, with the webhook as a plugin (``WebhookPlugin``), routes of its own beside it.

    python examples/recipes/litestar_app.py                 # app + in-process workers, embedded broker
    uvicorn examples.recipes.litestar_app:app               # production, with the worker apart:
    wa-middleware worker examples.recipes.litestar_app:wa

Not ``Litestar(middleware=[DefineMiddleware(WebhookMiddleware, webhook=wa)])``: Litestar routes a
request before its middleware runs, so that middleware never sees ``/webhook`` (every delivery
would be a 404; the plugin refuses to be combined with it, and ``testing.post`` says so). Wrapping
the whole app from outside works too: ``app = WebhookMiddleware(Litestar([...]), webhook=wa)``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from litestar import Litestar, get
from wa_middleware.adapters.litestar import WebhookPlugin

from wa_middleware import BasicAuth, EventContext, Message, Status, Webhook

wa = Webhook(
    auth=BasicAuth(os.environ.get("WA_USER", "360dialog"), os.environ.get("WA_PASSWORD", "s3cret")),
    broker_url=None,  # WA_BROKER_URL, else the embedded server (dev)
    namespace=os.environ.get("WA_NAMESPACE", "dramatiq"),
    data_dir=os.environ.get("WA_DATA_DIR", ".wa_middleware"),  # the embedded server's, when it runs
)


@wa.on_message("text")
def on_text(message: Message, ctx: EventContext) -> None:
    assert message.text is not None
    print(f"[callback] {ctx.sender_name or message.sender} wrote {message.text.body!r}", flush=True)


@wa.on_status("failed")
def on_failed(status: Status) -> None:
    assert status.error is not None
    print(f"[callback] message {status.id} failed: {status.error.code}", flush=True)


@get("/")
async def home() -> dict[str, str]:
    return {"shop": "open"}


app = Litestar(route_handlers=[home], plugins=[WebhookPlugin(wa)])


if __name__ == "__main__":
    import uvicorn

    wa.dev = True  # run the callbacks in this process: one command to try it all
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
