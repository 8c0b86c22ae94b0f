from fastapi import FastAPI
from hooks import wa
from wa_middleware.adapters.asgi import WebhookMiddleware

app = FastAPI()
app.add_middleware(WebhookMiddleware, webhook=wa)


@app.get("/items/{item_id}")
def item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}
