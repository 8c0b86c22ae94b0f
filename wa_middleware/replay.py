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
from typing import TYPE_CHECKING, Any

import msgspec

from .callbacks import Callback
from .decode import Event, decode_delivery
from .errors import ConfigurationError

if TYPE_CHECKING:
    import redis

    from .webhook import Webhook

__all__ = ["ReplayReport", "parse_since", "record_key", "recorded", "replay"]

#: Event kinds as the command line names them.
KINDS = {"messages": "message", "statuses": "status", "errors": "error", "changes": "change"}

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def record_key(namespace: str, queue_name: str) -> str:
    return f"{namespace}:{queue_name}.recorded"


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


def replay(
    webhook: Webhook,
    *,
    since_seconds: float,
    kinds: set[str] | None = None,
    callback: str | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Run the matching callbacks again over the deliveries recorded in the last ``since_seconds``."""
    import redis as redis_module

    if callback is not None and callback not in webhook.registry.by_name:
        known = ", ".join(sorted(webhook.registry.by_name)) or "none"
        raise ConfigurationError(f"no callback named {callback!r} (registered: {known})")
    client = redis_module.Redis.from_url(webhook.broker_url)
    report = ReplayReport()
    since_ms = int((time.time() - since_seconds) * 1000)
    try:
        for body, received_at, delivery_id in recorded(
            client, record_key(webhook.namespace, webhook.queue_name), since_ms
        ):
            report.deliveries += 1
            for event in decode_delivery(body, delivery_id=delivery_id, received_at=received_at):
                if kinds is not None and event.kind not in kinds:
                    continue
                ran = False
                for cb in webhook.registry.matching(event):
                    if callback is not None and cb.name != callback:
                        continue
                    ran = True
                    report.runs += 1
                    if not dry_run:
                        _run(cb, event, report)
                report.events += ran
    finally:
        client.close()
    return report


def _run(callback: Callback, event: Event, report: ReplayReport) -> None:
    try:
        callback(event)
    except Exception as exc:  # one failure must not stop the replay; it is reported
        report.failures.append((callback.name, f"{type(exc).__name__}: {exc}"))
