from starlette.applications import Starlette
from wa_middleware.adapters.asgi import WebhookMiddleware
from worker_hooks import wa

app = Starlette()
app.add_middleware(WebhookMiddleware, webhook=wa)
