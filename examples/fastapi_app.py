"""An ordinary FastAPI app with routes of its own, wrapped by the webhook middleware.

python examples/fastapi_app.py          # app + in-process workers on the embedded broker
uvicorn examples.fastapi_app:app        # production: run workers separately:
wa-middleware worker examples.callbacks:wa
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI
from wa_middleware.adapters.asgi import WebhookMiddleware

from examples.callbacks import wa

app = FastAPI(title="shop")
app.add_middleware(WebhookMiddleware, webhook=wa)


@app.get("/")
def home() -> dict[str, str]:
    return {"shop": "open"}


@app.get("/orders/{order_id}")
def order(order_id: int) -> dict[str, int | str]:
    return {"order_id": order_id, "state": "shipped"}


if __name__ == "__main__":
    import uvicorn

    wa.dev = True  # run the callbacks in this process: one command to try it all
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
