from hooks import wa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from wa_middleware.adapters.asgi import WebhookMiddleware


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("home")


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"method": request.method, "body": (await request.body()).decode()})


app = Starlette(routes=[Route("/", home), Route("/echo", echo, methods=["POST", "GET"])])
app.add_middleware(WebhookMiddleware, webhook=wa)
