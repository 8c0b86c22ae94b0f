"""Pure ASGI middleware: ``app.add_middleware(WebhookMiddleware, webhook=wa)``."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING

from wa_middleware import metrics
from wa_middleware.errors import ConfigurationError, PayloadError, RequestTimeout, WebhookError
from wa_middleware.web import routes
from wa_middleware.web.core import parse_content_length
from wa_middleware.web.deadline import deadline
from wa_middleware.webhook import Webhook

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from wa_middleware.web.core import Response

__all__ = ["WebhookMiddleware"]

logger = logging.getLogger("wa_middleware.request")


#: Why ``Litestar(middleware=[DefineMiddleware(WebhookMiddleware, ...)])`` cannot work, and what does.
MISPLACED = (
    "WebhookMiddleware given to Litestar(middleware=[...]) never sees the webhook's path: Litestar routes "
    "a request before its middleware runs, so every delivery is a 404. Use "
    "Litestar(..., plugins=[WebhookPlugin(wa)]) (from wa_middleware.adapters.litestar), or wrap the whole app "
    "from outside: app = WebhookMiddleware(Litestar(...), webhook=wa)"
)


#: Header names as the core wants them (``str``, lower case), by their bytes: a server sends the same
#: dozen names over and over. Bounded, since the names are the client's to choose.
_NAMES: dict[bytes, str] = {}
_MAX_NAMES = 256


class WebhookMiddleware:
    """Serve ``webhook.path`` (POST deliveries; GET for Meta's handshake) in front of any ASGI app;
    everything else passes through.

    :param app: the wrapped ASGI application.
    :param webhook: the `Webhook` to serve.
    """

    def __init__(self, app: ASGIApp, webhook: Webhook) -> None:
        if not isinstance(webhook, Webhook):
            raise ConfigurationError(f"webhook must be a wa_middleware.Webhook, not {webhook!r}")
        module = type(app).__module__
        if module.startswith("litestar.") and module != "litestar.app":
            # Litestar's own middleware list runs after routing: every delivery would be a 404 there.
            raise ConfigurationError(MISPLACED)
        self.app = app
        self.webhook = webhook
        self.core = webhook.core
        self.ops = routes.asgi_routes(webhook)  # health_path / metrics_path, when enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.core.matches(scope["path"]):
            if self.ops and scope["type"] == "http" and scope["path"] in self.ops:
                await self.ops[scope["path"]](scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            response = await self._handle(scope, receive)
        except WebhookError as exc:
            response = self.core.reject(exc)
        except Exception as exc:  # a bug must still not become a 200 or a traceback
            response = self.core.internal_error(exc)
        try:
            await send({"type": "http.response.start", "status": response.status, "headers": response.raw_headers})
            await send({"type": "http.response.body", "body": response.body})
        except Exception:
            # The server already closed this exchange (e.g. uvicorn answered broken body framing
            # with its own 400 while we were deciding): nobody is left to answer.
            logger.debug("webhook response not sent: the connection is closed")
        metrics.request_done(response.status, time.perf_counter() - started)

    async def _handle(self, scope: Scope, receive: Receive) -> Response:
        core = self.core
        headers: dict[str, str] = {}
        names = _NAMES
        for raw_name, raw_value in scope["headers"]:
            name = names.get(raw_name)
            if name is None:
                name = raw_name.decode("latin-1").lower()
                if len(names) < _MAX_NAMES:
                    names[raw_name] = name
            value = raw_value.decode("latin-1")
            # Repeated headers are joined as WSGI servers join them, so both adapters see the same
            # thing (and a repeated credential is malformed, not "the last one wins").
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        content_length = parse_content_length(headers.get("content-length"))
        query = scope.get("query_string", b"").decode("latin-1")
        early = core.start(scope["method"], headers, content_length, query)
        if early is not None:
            return early
        body = await self._read_body(receive, core.body_timeout_for(headers))
        if body is None:
            return core.too_large()
        job = core.finish(headers, body)
        enqueuer = await self.webhook.async_enqueuer()
        await enqueuer.enqueue(job.message_id, job.data)
        return core.accepted(job)

    async def _read_body(self, receive: Receive, timeout: float) -> bytes | None:
        """Read the body counting bytes against the cap; None when it grows past it.

        The whole body must arrive within ``timeout`` (not each chunk: a client sending a byte every
        few seconds would hold the request open for ever): ``core.body_timeout``, or the tighter
        ``core.signed_body_timeout`` when only a signature, checked on the body, can authenticate it.
        """
        if sys.version_info < (3, 11):
            return await self._read_body_until(receive, asyncio.get_running_loop().time() + timeout)
        cap = self.core.max_body_size
        chunks: list[bytes] = []
        size = 0
        more = True
        try:
            # One deadline for the whole read, and no task per receive() as wait_for makes.
            with deadline(timeout):
                while more:
                    message: Message = await receive()
                    if message["type"] == "http.disconnect":
                        # Gone before the body was complete: nothing stored. The answer goes nowhere (the
                        # server drops it) but completes the exchange, which servers log as an error otherwise.
                        raise PayloadError("incomplete body")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > cap:
                        return None
                    chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            raise RequestTimeout() from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _read_body_until(self, receive: Receive, deadline: float) -> bytes | None:
        """`_read_body` for Python 3.10 (no ``Task.uncancel``): a bounded wait for each message."""
        cap = self.core.max_body_size
        loop = asyncio.get_running_loop()
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message: Message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                raise RequestTimeout() from None
            if message["type"] == "http.disconnect":
                raise PayloadError("incomplete body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
