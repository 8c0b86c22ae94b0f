"""Prometheus metrics (``pip install 'wa-middleware[metrics]'``); without ``prometheus-client`` every hook is a no-op.

Web side (the process that answers 360dialog):

===========================================================  =========  ===========================
``wa_middleware_requests_total{status}``                      counter    answers by HTTP status
``wa_middleware_request_duration_seconds``                    histogram  request received to answer
``wa_middleware_enqueue_duration_seconds``                    histogram  broker write round trip
``wa_middleware_enqueue_failures_total``                      counter    writes the broker did not ack
===========================================================  =========  ===========================

Worker side (``wa-middleware worker``):

===========================================================  =========  ===========================
``wa_middleware_events_total{kind}``                          counter    decoded events by kind
``wa_middleware_callback_runs_total{callback}``               counter    callback invocations
``wa_middleware_callback_failures_total{callback}``           counter    invocations that raised
``wa_middleware_callback_retries_total{callback}``            counter    retries scheduled
``wa_middleware_duplicates_skipped_total``                    counter    redeliveries not run again
``wa_middleware_dead_letters_total{callback}``                counter    messages dead-lettered
===========================================================  =========  ===========================

Either side, read from Redis at scrape time:
``wa_middleware_queue_depth{queue, state}`` gauge, ``state`` one of ``ready``, ``delayed``, ``dead``.

The metrics live in ``prometheus_client``'s default registry, so an application that already
exposes it (``make_asgi_app()``, ``start_http_server()``) exports them with no more code; or set
``Webhook(metrics_path="/metrics")``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from prometheus_client.registry import Collector, CollectorRegistry

    from .settings import BrokerLink

__all__ = [
    "AVAILABLE",
    "Metrics",
    "QueueDepthCollector",
    "callback_retry",
    "callback_run",
    "dead_letter",
    "duplicate_skipped",
    "enqueue_done",
    "events_decoded",
    "get",
    "request_done",
]


def _installed() -> bool:
    try:
        return importlib.util.find_spec("prometheus_client") is not None
    except (ImportError, ValueError):
        return False


#: True when ``prometheus-client`` is installed. It is imported only when first used, and
#: dramatiq only on the worker side: ``import wa_middleware`` stays light.
AVAILABLE = _installed()

#: Seconds: the answer must be well under 360dialog's 5 s.
_REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The library's metrics, registered in ``registry`` (the default registry if None)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if not AVAILABLE:
            raise RuntimeError("prometheus-client is not installed: pip install 'wa-middleware[metrics]'")
        import prometheus_client as p

        reg = registry if registry is not None else p.REGISTRY
        self.requests = p.Counter("wa_middleware_requests", "Webhook answers by HTTP status.", ["status"], registry=reg)
        self.request_duration = p.Histogram(
            "wa_middleware_request_duration_seconds",
            "Time from request to answer on the webhook path.",
            buckets=_REQUEST_BUCKETS,
            registry=reg,
        )
        self.enqueue_duration = p.Histogram(
            "wa_middleware_enqueue_duration_seconds",
            "Round trip of the broker write of one delivery.",
            buckets=_REQUEST_BUCKETS,
            registry=reg,
        )
        self.enqueue_failures = p.Counter(
            "wa_middleware_enqueue_failures", "Deliveries the broker did not acknowledge (answered 503).", registry=reg
        )
        self.events = p.Counter("wa_middleware_events", "Decoded events by kind.", ["kind"], registry=reg)
        self.callback_runs = p.Counter(
            "wa_middleware_callback_runs", "Callback invocations.", ["callback"], registry=reg
        )
        self.callback_failures = p.Counter(
            "wa_middleware_callback_failures", "Callback invocations that raised.", ["callback"], registry=reg
        )
        self.callback_retries = p.Counter(
            "wa_middleware_callback_retries", "Callback retries scheduled.", ["callback"], registry=reg
        )
        self.duplicates = p.Counter(
            "wa_middleware_duplicates_skipped", "Redelivered events whose callbacks were not run again.", registry=reg
        )
        self.dead_letters = p.Counter(
            "wa_middleware_dead_letters", "Messages moved to the dead-letter queue.", ["callback"], registry=reg
        )
        # labels() costs microseconds (a lock, a tuple, a dict); the request path looks its child up here.
        self._by_status: dict[int, Any] = {}

    def status_counter(self, status: int) -> Any:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.requests.labels(str(status))
        return child


_lock = threading.Lock()
_metrics: Metrics | None = None


def get() -> Metrics | None:
    """The process-wide metrics in the default registry; None without ``prometheus-client``."""
    global _metrics
    if _metrics is None and AVAILABLE:
        with _lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


# -- observation points: called by the adapters and the worker; cheap no-ops without the extra --


def request_done(status: int, seconds: float) -> None:
    m = _metrics or get()
    if m is not None:
        m.status_counter(status).inc()
        m.request_duration.observe(seconds)


def enqueue_done(seconds: float, ok: bool) -> None:
    m = _metrics or get()
    if m is not None:
        m.enqueue_duration.observe(seconds)
        if not ok:
            m.enqueue_failures.inc()


def events_decoded(kinds: Iterable[str]) -> None:
    m = _metrics or get()
    if m is not None:
        for kind in kinds:
            m.events.labels(kind).inc()


def callback_run(name: str, ok: bool) -> None:
    m = _metrics or get()
    if m is not None:
        m.callback_runs.labels(name).inc()
        if not ok:
            m.callback_failures.labels(name).inc()


def callback_retry(name: str) -> None:
    m = _metrics or get()
    if m is not None:
        m.callback_retries.labels(name).inc()


def duplicate_skipped(count: int = 1) -> None:
    m = _metrics or get()
    if m is not None:
        m.duplicates.inc(count)


def dead_letter(name: str) -> None:
    m = _metrics or get()
    if m is not None:
        m.dead_letters.labels(name).inc()


def _family() -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(
        "wa_middleware_queue_depth", "Messages in the dramatiq queue by state.", labels=["queue", "state"]
    )


class QueueDepthCollector:
    """``wa_middleware_queue_depth{queue, state}``, read from Redis at every scrape.

    :param webhook: whose broker, namespace and queue are read.
    :param timeout: seconds Redis has to answer; a scrape never hangs on a dead broker.
    """

    def __init__(self, webhook: BrokerLink, timeout: float = 1.0) -> None:
        self.webhook = webhook
        self.timeout = timeout
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            from .redis_url import sync_client

            self._client = sync_client(
                self.webhook.broker_url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        return self._client

    def describe(self) -> Iterator[Any]:
        # Registration calls describe(), not collect(): no Redis connection at start-up.
        yield _family()

    def collect(self) -> Iterator[Any]:
        keys = self.webhook.keys
        queue = keys.queue_name
        family = _family()
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.llen(keys.queue)
            pipe.llen(keys.delay_queue)  # the delay queue (retries waiting for their time) is a list too
            pipe.zcard(keys.dead_letters)  # dramatiq's dead-letter queue
            depth = pipe.execute()
        except Exception:
            return  # no sample beats a wrong one; the health check reports the broker
        for state, value in zip(("ready", "delayed", "dead"), depth, strict=True):
            family.add_metric([queue, state], float(value))
        yield family


_collectors: dict[tuple[int, str, str], QueueDepthCollector] = {}


def watch_queue(webhook: BrokerLink, registry: CollectorRegistry | None = None) -> None:
    """Export the queue depth of ``webhook`` (once per registry, namespace and queue)."""
    if not AVAILABLE:
        return
    import prometheus_client

    reg = registry if registry is not None else prometheus_client.REGISTRY
    key = (id(reg), webhook.keys.namespace, webhook.keys.queue_name)
    with _lock:
        if key not in _collectors:
            collector = QueueDepthCollector(webhook)
            reg.register(cast("Collector", collector))
            _collectors[key] = collector


def exposition_registry(webhook: BrokerLink) -> CollectorRegistry:
    """The registry ``metrics_path`` serves: the default one, or with ``PROMETHEUS_MULTIPROC_DIR``
    set (several web processes), one that sums the samples of every process. Queue depth included."""
    if not AVAILABLE:
        raise RuntimeError("prometheus-client is not installed: pip install 'wa-middleware[metrics]'")
    import prometheus_client

    get()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = prometheus_client.REGISTRY
    watch_queue(webhook, registry)
    return registry


def serve_worker_metrics(port: int, webhook: BrokerLink, *, addr: str = "0.0.0.0") -> None:
    """Serve the samples of every worker process (prometheus_client's multiprocess mode) and the queue depth.

    ``PROMETHEUS_MULTIPROC_DIR`` must have been set before ``prometheus_client`` was first
    imported; ``wa-middleware worker --metrics-port`` does that.
    """
    from .errors import ConfigurationError

    if not AVAILABLE:
        raise ConfigurationError("--metrics-port needs prometheus-client: pip install 'wa-middleware[metrics]'")
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise ConfigurationError("set PROMETHEUS_MULTIPROC_DIR before starting the workers")
    import prometheus_client
    from prometheus_client import multiprocess

    registry = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    watch_queue(webhook, registry)
    prometheus_client.start_http_server(port, addr=addr, registry=registry)
