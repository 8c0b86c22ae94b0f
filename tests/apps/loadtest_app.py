"""The app ``wa-middleware loadtest`` is tested against: the middleware alone, with the auth scheme
named by ``$WA_LOADTEST_AUTH``, storing in ``$WA_BROKER_URL`` under ``$WA_NAMESPACE``.

The secrets are the tests' own (tests/cli/test_loadtest_cli.py signs with the same ones).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from wa_middleware.adapters.asgi import WebhookMiddleware

from wa_middleware import AllOf, BasicAuth, Dialog360Signature, HeaderAuth, HubSignature256, Webhook

SCHEMES = {
    "basic": lambda: BasicAuth("testuser", "testpass"),
    "token": lambda: HeaderAuth("X-Webhook-Token", "load-token"),
    "360dialog": lambda: Dialog360Signature("partner-secret"),
    "meta": lambda: HubSignature256("meta-app-secret"),
    "basic+360dialog": lambda: AllOf(BasicAuth("testuser", "testpass"), Dialog360Signature("partner-secret")),
}

wa = Webhook(
    auth=SCHEMES[os.environ.get("WA_LOADTEST_AUTH", "360dialog")](),
    broker_url=os.environ["WA_BROKER_URL"],
    namespace=os.environ["WA_NAMESPACE"],
)


@wa.on_message()
def on_message(message: object) -> None:
    """Never run by the tests (they start no worker): deliveries only wait in the queue."""


app = Starlette()
app.add_middleware(WebhookMiddleware, webhook=wa)
