"""The operator endpoints the middleware can answer itself: ``health_path`` and ``metrics_path``.

Both are off by default. The adapters look a request's path up in the table built here before
their pass-through guard, so neither endpoint costs the webhook path anything.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import ConfigurationError
from ..settings import BrokerLink
from .health import EnqueuerSource

__all__ = ["asgi_routes", "check_paths", "wsgi_routes"]


def check_paths(path: str, health_path: str | None, metrics_path: str | None) -> None:
    """Validate the optional paths at configuration time; raises `ConfigurationError`."""
    seen = {path}
    for name, value in (("health_path", health_path), ("metrics_path", metrics_path)):
        if value is None:
            continue
        if not isinstance(value, str) or not value.startswith("/"):
            raise ConfigurationError(f"{name} must be a path starting with '/': {value!r}")
        if value in seen:
            raise ConfigurationError(f"{name} {value!r} is already served by the middleware")
        seen.add(value)
    if metrics_path is not None:
        from .. import metrics

        if not metrics.AVAILABLE:
            raise ConfigurationError("metrics_path needs prometheus-client: pip install 'wa-middleware[metrics]'")


def _warm_up() -> None:
    # Import prometheus_client (when installed) and create the metrics while the app starts,
    # not on the first delivery.
    from .. import metrics

    metrics.get()


class RouteSource(EnqueuerSource, BrokerLink, Protocol):
    """What the operator routes need of a webhook: its paths, its clients, its broker and keys."""

    @property
    def health_path(self) -> str | None: ...

    @property
    def metrics_path(self) -> str | None: ...


def asgi_routes(webhook: RouteSource) -> dict[str, Any]:
    """``{path: ASGI app}`` of the endpoints ``webhook`` enables (often empty)."""
    return _routes(webhook, "asgi")


def wsgi_routes(webhook: RouteSource) -> dict[str, Any]:
    """``{path: WSGI app}`` of the endpoints ``webhook`` enables (often empty)."""
    return _routes(webhook, "wsgi")


def _routes(webhook: RouteSource, flavour: str) -> dict[str, Any]:
    _warm_up()
    routes: dict[str, Any] = {}
    if webhook.health_path is not None:
        from .health import HealthCheck

        routes[webhook.health_path] = getattr(HealthCheck(webhook), flavour)
    if webhook.metrics_path is not None:
        import prometheus_client

        from .. import metrics

        make = prometheus_client.make_asgi_app if flavour == "asgi" else prometheus_client.make_wsgi_app
        routes[webhook.metrics_path] = make(metrics.exposition_registry(webhook))
    return routes
