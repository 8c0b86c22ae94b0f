"""The operator endpoints the middleware can answer itself: ``health_path`` and ``metrics_path``.

Both are off by default. The adapters look a request's path up in the table built here before
their pass-through guard, so neither endpoint costs the webhook path anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .webhook import Webhook

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
        from . import metrics

        if not metrics.AVAILABLE:
            raise ConfigurationError("metrics_path needs prometheus-client: pip install 'wa-middleware[metrics]'")


def _warm_up() -> None:
    # Import prometheus_client (when installed) and create the metrics while the app starts,
    # not on the first delivery.
    from . import metrics

    metrics.get()


def _paths(webhook: Webhook) -> tuple[str | None, str | None]:
    return getattr(webhook, "health_path", None), getattr(webhook, "metrics_path", None)


def asgi_routes(webhook: Webhook) -> dict[str, Any]:
    """``{path: ASGI app}`` of the endpoints ``webhook`` enables (often empty)."""
    return _routes(webhook, "asgi")


def wsgi_routes(webhook: Webhook) -> dict[str, Any]:
    """``{path: WSGI app}`` of the endpoints ``webhook`` enables (often empty)."""
    return _routes(webhook, "wsgi")


def _routes(webhook: Webhook, flavour: str) -> dict[str, Any]:
    _warm_up()
    health_path, metrics_path = _paths(webhook)
    routes: dict[str, Any] = {}
    if health_path is not None:
        from .health import HealthCheck

        routes[health_path] = getattr(HealthCheck(webhook), flavour)
    if metrics_path is not None:
        import prometheus_client

        from . import metrics

        make = prometheus_client.make_asgi_app if flavour == "asgi" else prometheus_client.make_wsgi_app
        routes[metrics_path] = make(metrics.exposition_registry(webhook))
    return routes
