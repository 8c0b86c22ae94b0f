"""Falcon, WSGI and ASGI, each wrapped from outside (Falcon's own middleware is not WSGI/ASGI middleware).

python examples/recipes/falcon_app.py                       # WSGI app + in-process workers, embedded broker
gunicorn examples.recipes.falcon_app:app                    # production (WSGI), the worker apart:
uvicorn examples.recipes.falcon_app:asgi_app                # or ASGI
wa-middleware worker examples.recipes.falcon_app:wa
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import falcon
import falcon.asgi
from wa_middleware.adapters import asgi, wsgi

from wa_middleware import BasicAuth, EventContext, Message, Webhook

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


class Order:
    def on_get(self, req: falcon.Request, resp: falcon.Response, order_id: int) -> None:
        resp.media = {"order_id": order_id, "state": "shipped"}


class AsyncOrder:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, order_id: int) -> None:
        resp.media = {"order_id": order_id, "state": "shipped"}


falcon_app = falcon.App()
falcon_app.add_route("/orders/{order_id:int}", Order())
app = wsgi.WebhookMiddleware(falcon_app, webhook=wa)

falcon_asgi_app = falcon.asgi.App()
falcon_asgi_app.add_route("/orders/{order_id:int}", AsyncOrder())
asgi_app = asgi.WebhookMiddleware(falcon_asgi_app, webhook=wa)


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    wa.dev = True  # run the callbacks in this process: one command to try it all
    with make_server("127.0.0.1", int(os.environ.get("PORT", "8000")), app) as server:
        server.serve_forever()
