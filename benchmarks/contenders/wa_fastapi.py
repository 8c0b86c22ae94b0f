"""wa-middleware as a middleware of a FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI
from wa_middleware.adapters.asgi import WebhookMiddleware

from ._webhook import wa

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
app.add_middleware(WebhookMiddleware, webhook=wa)

__all__ = ["app", "wa"]
