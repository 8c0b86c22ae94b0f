"""wa-middleware as the first middleware of a Starlette app (which has no routes of its own)."""

from __future__ import annotations

from starlette.applications import Starlette
from wa_middleware.adapters.asgi import WebhookMiddleware

from ._webhook import wa

app = Starlette()
app.add_middleware(WebhookMiddleware, webhook=wa)

__all__ = ["app", "wa"]
