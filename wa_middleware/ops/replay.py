"""Recording of accepted deliveries, and replay of their callbacks after a bug fix.

With ``Webhook(record=True)`` every delivery answered 200 is also appended, in the same
atomic script call as its queue message, to a Redis stream trimmed by count and by age. The
stream ids are the write times, so "the last two hours" is one ``XRANGE``.

``wa-middleware replay`` runs callbacks again over that record, in the command's own process,
through the same decode and filter code the workers use: deduplication is bypassed, explicitly,
since re-running is the point.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from ..errors import ConfigurationError
from ..events.decode import decode_delivery
from ..events.run import pairs, run_callbacks
from ..settings import BrokerLink

if TYPE_CHECKING:
    import redis

    from ..events.callbacks import Registry

__all__ = ["ReplayReport", "ReplaySource", "parse_since", "recorded", "replay"]

#: Event kinds as the command line names them.
KINDS = {"messages": "message", "statuses": "status", "errors": "error", "changes": "change"}

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"7d"`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match is None:
        raise ConfigurationError(f"--since takes a duration like 30m, 2h or 7d, not {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


_message_decoder = msgspec.msgpack.Decoder()


def recorded(client: redis.Redis, key: str, since_ms: int, *, chunk: int = 500) -> Iterator[tuple[bytes, int, str]]:
    """Yield ``(body, received_at_ms, delivery_id)`` of the deliveries recorded since ``since_ms``."""
    start = f"{since_ms}-0"
    while True:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(key, min=start, max="+", count=chunk)  # type: ignore[assignment]
        if not entries:
            return
        for _, fields in entries:
            message: dict[str, Any] = _message_decoder.decode(fields[b"m"])
            body, received_at, delivery_id = message["args"]
            yield body, received_at, delivery_id
        last = entries[-1][0].decode()
        start = "(" + last
        if len(entries) < chunk:
            return


@dataclass
class ReplayReport:
    """What a replay did (or, with ``dry_run``, would do)."""

    deliveries: int = 0
    events: int = 0
    runs: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: With ``dry_run``: what would run, as (callback name, event kind, event id or key).
    planned: list[tuple[str, str, str]] = field(default_factory=list)


class ReplaySource(BrokerLink, Protocol):
    """What a replay needs of a webhook: its broker and keys, and its callbacks."""

    @property
    def registry(self) -> Registry: ...


def replay(
    webhook: ReplaySource,
    *,
    since_seconds: float,
    kinds: set[str] | None = None,
    callback: str | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Run the matching callbacks again over the deliveries recorded in the last ``since_seconds``.

    Through the one callback loop (`wa_middleware.events.run`): a failure is reported and the
    replay goes on; `StopPropagation` holds as in the worker.
    """
    from ..redis_url import sync_client

    registry = webhook.registry
    if callback is not None and callback not in registry.by_name:
        known = ", ".join(sorted(registry.by_name)) or "none"
        raise ConfigurationError(f"no callback named {callback!r} (registered: {known})")
    client = sync_client(webhook.broker_url)
    report = ReplayReport()
    since_ms = int((time.time() - since_seconds) * 1000)
    names = None if callback is None else {callback}
    try:
        for body, received_at, delivery_id in recorded(client, webhook.keys.recorded, since_ms):
            report.deliveries += 1
            events = decode_delivery(body, delivery_id=delivery_id, received_at=received_at)
            selected = pairs(registry, events, kinds=kinds, names=names)  # type: ignore[arg-type]
            touched: set[int] = set()
            for outcome in run_callbacks(selected, dry_run=dry_run):
                if outcome.state == "skipped":
                    continue
                touched.add(id(outcome.item.event))
                report.runs += 1
                if outcome.state == "dry":
                    event = outcome.item.event
                    ident = getattr(event.data, "id", None) or getattr(event.data, "field", None) or "?"
                    report.planned.append((outcome.item.callback.name, event.kind, str(ident)))
                if outcome.error is not None:
                    error = outcome.error
                    report.failures.append((outcome.item.callback.name, f"{type(error).__name__}: {error}"))
            report.events += len(touched)
    finally:
        client.close()
    return report
