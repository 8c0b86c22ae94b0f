"""Litestar: ``Litestar(route_handlers, plugins=[WebhookPlugin(wa)])``.

Litestar routes a request before any of its middleware runs: a `WebhookMiddleware` given to
``Litestar(middleware=[...])`` is built around each of your routes and never sees a path that is
not one of them, so every delivery would be a 404. The plugin instead adds the webhook's path
(and its ``health_path`` / ``metrics_path``) as routes of the app, each an ASGI route that hands
the request to the same middleware, so the one sans-IO core decides, as everywhere else.

The other form that works wraps the whole app from outside, in front of Litestar's router::

    app = WebhookMiddleware(Litestar(route_handlers), webhook=wa)   # wa_middleware.adapters.asgi

Needs the ``litestar`` package (``pip install "wa-middleware[recipes]"`` brings it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from litestar import asgi
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPlugin
from starlette.types import Receive, Scope, Send
from wa_middleware.adapters.asgi import MISPLACED, WebhookMiddleware

from wa_middleware.errors import ConfigurationError
from wa_middleware.webhook import Webhook

if TYPE_CHECKING:
    from litestar.config.app import AppConfig
    from litestar.handlers import ASGIRouteHandler

__all__ = ["MISPLACED", "WebhookPlugin", "check_middleware"]


#: Route options the plugin sets by default: the webhook authenticates deliveries itself, and
#: 360dialog has neither a session for Litestar's authentication middleware nor a CSRF token.
DEFAULT_OPT: Mapping[str, Any] = {"exclude_from_auth": True, "exclude_from_csrf": True}


def check_middleware(middleware: Iterable[Any]) -> None:
    """Raise `ConfigurationError` when a Litestar middleware list holds the webhook middleware.

    :param middleware: a Litestar app's or router's ``middleware`` (classes, `DefineMiddleware`...).
    """
    for item in middleware:
        cls = item.middleware if isinstance(item, DefineMiddleware) else item
        if isinstance(cls, type) and issubclass(cls, WebhookMiddleware):
            raise ConfigurationError(MISPLACED)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    # Only reached for a path the webhook's middleware does not serve, which Litestar routed to it.
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


class WebhookPlugin(InitPlugin):
    """Serve ``webhook.path`` (and its ``health_path`` and ``metrics_path``) as routes of a Litestar app.

    The routes take every method (the core answers ``405`` to those it does not serve) and, as
    every Litestar route, a trailing slash: ``/webhook/`` reaches the webhook too. The app's own
    middleware, guards and hooks apply to them like to any route, except authentication and CSRF
    (`DEFAULT_OPT`).

    :param webhook: the `Webhook` to serve.
    :param opt: route options, merged over `DEFAULT_OPT` (``{"exclude_from_csrf": False}`` to undo one).
    :raises ConfigurationError: at app creation, when the app's middleware also holds
        `WebhookMiddleware` (it would never see the path; see `MISPLACED`).
    """

    __slots__ = ("middleware", "opt", "paths", "webhook")

    def __init__(self, webhook: Webhook, *, opt: Mapping[str, Any] | None = None) -> None:
        if not isinstance(webhook, Webhook):
            raise ConfigurationError(f"webhook must be a wa_middleware.Webhook, not {webhook!r}")
        self.webhook = webhook
        self.opt = {**DEFAULT_OPT, **(opt or {})}
        self.middleware = WebhookMiddleware(_not_found, webhook=webhook)
        served = [webhook.path, webhook.health_path, webhook.metrics_path]
        #: Served path by the form Litestar routes it under (without a trailing slash).
        self.paths = {path.rstrip("/") or "/": path for path in served if path is not None}

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        check_middleware(app_config.middleware)
        app_config.route_handlers.append(self.route_handler())
        return app_config

    def route_handler(self) -> ASGIRouteHandler:
        """The ASGI route handler serving the webhook's paths (added to the app by `on_app_init`)."""
        middleware, paths = self.middleware, self.paths

        # Litestar reads these annotations at run time: the ASGI types the middleware takes (Starlette's).
        async def whatsapp_webhook(scope: Scope, receive: Receive, send: Send) -> None:
            # Litestar has routed this request to one of our paths, and hands it over without the
            # trailing slash it ignores: give the core the path it serves.
            served = paths.get(scope["path"].rstrip("/") or "/")
            if served is not None and served != scope["path"]:
                scope = {**scope, "path": served}
            await middleware(scope, receive, send)

        return asgi(list(paths.values()), name="wa_middleware.webhook", opt=dict(self.opt), copy_scope=True)(
            whatsapp_webhook
        )

    def __repr__(self) -> str:
        return f"WebhookPlugin({self.webhook!r})"
