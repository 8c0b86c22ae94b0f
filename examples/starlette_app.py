"""An ordinary Starlette app wrapped by the webhook middleware.

python examples/starlette_app.py        # app + in-process workers on the embedded broker
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from wa_middleware.adapters.asgi import WebhookMiddleware

from examples.callbacks import wa


async def home(request: Request) -> JSONResponse:
    return JSONResponse({"shop": "open"})


app = Starlette(routes=[Route("/", home)], middleware=[Middleware(WebhookMiddleware, webhook=wa)])

if __name__ == "__main__":
    import uvicorn

    wa.dev = True
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
