"""Pure ASGI middleware: ``app.add_middleware(WebhookMiddleware, webhook=wa)``."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from wa_middleware import metrics, ops
from wa_middleware.errors import ConfigurationError, QueueUnavailable, WebhookError
from wa_middleware.webhook import Webhook

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from wa_middleware.core import Response

__all__ = ["WebhookMiddleware"]


class WebhookMiddleware:
    """Serve ``POST webhook.path`` in front of any ASGI app; everything else passes through.

    :param app: the wrapped ASGI application.
    :param webhook: the `Webhook` to serve.
    """

    def __init__(self, app: ASGIApp, webhook: Webhook) -> None:
        if not isinstance(webhook, Webhook):
            raise ConfigurationError(f"webhook must be a wa_middleware.Webhook, not {webhook!r}")
        self.app = app
        self.webhook = webhook
        self.core = webhook.core
        self.ops = ops.asgi_routes(webhook)  # health_path / metrics_path, when enabled

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
        await send({"type": "http.response.start", "status": response.status, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
        metrics.request_done(response.status, time.perf_counter() - started)

    async def _handle(self, scope: Scope, receive: Receive) -> Response:
        core = self.core
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length_header = headers.get("content-length")
        content_length: int | None = None
        if length_header is not None:
            content_length = int(length_header) if length_header.isdigit() else -1
        early = core.start(scope["method"], headers, content_length)
        if early is not None:
            return early
        body = await self._read_body(receive)
        if body is None:
            return core.too_large()
        job = core.finish(headers, body)
        enqueuer = await self.webhook.async_enqueuer()
        started = time.perf_counter()
        try:
            await enqueuer.enqueue(job.message_id, job.data)
        except BaseException:
            metrics.enqueue_done(time.perf_counter() - started, ok=False)
            raise
        metrics.enqueue_done(time.perf_counter() - started, ok=True)
        return core.accepted(job)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """Read the body counting bytes against the cap; None when it grows past it."""
        cap = self.core.max_body_size
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message: Message = await asyncio.wait_for(receive(), self.core.body_timeout)
            except asyncio.TimeoutError:
                from wa_middleware.errors import RequestTimeout

                raise RequestTimeout() from None
            if message["type"] == "http.disconnect":
                # Nobody is left to answer; nothing was stored, so the sender will retry.
                raise QueueUnavailable("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
