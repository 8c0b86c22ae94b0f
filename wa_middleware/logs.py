"""Structured log lines: one event per line, as ``key=value`` pairs or JSON.

::

    import wa_middleware.logs
    wa_middleware.logs.configure(format="json")   # or "kv" (the default)

The library logs under the ``wa_middleware`` logger and never passes a secret or a message
body to it; as a second line of defence the formatter replaces the value of any field whose
name looks secret (authorization, password, token, api key, body...) with ``<redacted>``.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from typing import IO, Any, Literal

__all__ = ["JsonFormatter", "KeyValueFormatter", "configure", "fields"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_SECRET = re.compile(r"authori[sz]ation|passw|secret|token|api[_-]?key|cookie|signature|body|credential", re.I)
_BARE = re.compile(r"^[A-Za-z0-9_.:/@+<>-]+$")
REDACTED = "<redacted>"


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of one log line, secrets redacted."""
    out: dict[str, Any] = {
        "ts": datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc).isoformat(
            timespec="milliseconds"
        ),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        out[key] = REDACTED if _SECRET.search(key) else value
    if record.exc_info and record.exc_info[1] is not None:
        out["exc_type"] = type(record.exc_info[1]).__name__
        out["traceback"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(fields(record), default=str, ensure_ascii=False, separators=(",", ":"))


def _kv(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    if text and _BARE.match(text):
        return text
    return json.dumps(text, ensure_ascii=False)  # quoted, newlines escaped: still one line


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=info logger=wa_middleware.access event=request status=200 ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_kv(value)}" for key, value in fields(record).items())


def configure(
    format: Literal["kv", "json"] = "kv",
    *,
    level: int | str = logging.INFO,
    stream: IO[str] | None = None,
    logger: str = "wa_middleware",
) -> logging.Handler:
    """Send the library's log events to ``stream`` (stderr by default), one line each.

    Calling it again replaces the handler it installed before. The logger stops propagating to
    the root logger, so lines are not printed twice by an application's own logging setup.

    :param format: ``"kv"`` for ``key=value`` pairs, ``"json"`` for one JSON object per line.
    :param level: the lowest level logged.
    :param stream: where lines go.
    :param logger: the logger to configure.
    :returns: the installed handler.
    """
    if format not in ("kv", "json"):
        raise ValueError(f"format must be 'kv' or 'json', not {format!r}")
    target = logging.getLogger(logger)
    for handler in list(target.handlers):
        if getattr(handler, "_wa_middleware", False):
            target.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else KeyValueFormatter())
    handler._wa_middleware = True  # type: ignore[attr-defined]
    target.addHandler(handler)
    target.setLevel(level)
    target.propagate = False
    return handler
