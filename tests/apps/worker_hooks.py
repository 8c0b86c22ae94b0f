"""The Webhook of the worker fault and ordering tests, configured from the environment.

Every callback appends ``start`` and ``end`` lines (JSON, O_APPEND: lines of several processes
never interleave) to ``$WA_EVENTS``. ``WA_SLEEP_MS`` makes callbacks sleep a random 0..N ms,
``WA_FAIL_TWICE`` (comma-separated message ids or texts) makes ``on_text`` fail on the first two
tries of those, ``WA_FAIL_ALWAYS`` makes ``on_text`` fail on those while the file
``$WA_EVENTS.broken`` exists, ``WA_SLOW`` makes ``on_text`` sleep ``WA_SLOW_S`` (3) s on those (to be
killed in the middle), ``WA_BASE_EXCEPTION`` makes ``on_text`` raise a BaseException (not a callback
failure: dramatiq itself rejects the message) on those while ``$WA_EVENTS.broken`` exists,
``WA_HOLD_GIL`` makes ``on_text`` hold the GIL for ``WA_HOLD_GIL_S`` (6) s on the first try of
those (a C call that never releases it: no other thread of the process runs meanwhile).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import time

from wa_middleware import BasicAuth, EventContext, Message, Status, Webhook

if os.environ.get("WA_CLOCK_SKEW"):
    # This process's clock runs ahead or behind (a machine whose clock is off): leases must not care.
    _real_time, _skew = time.time, float(os.environ["WA_CLOCK_SKEW"])
    time.time = lambda: _real_time() + _skew  # type: ignore[assignment]

wa = Webhook(
    auth=BasicAuth("testuser", "testpass"),
    broker_url=os.environ["WA_BROKER_URL"],
    namespace=os.environ["WA_NAMESPACE"],
    min_backoff=int(os.environ.get("WA_MIN_BACKOFF", "100")),
    max_backoff=int(os.environ.get("WA_MAX_BACKOFF", "1000")),
    max_retries=int(os.environ.get("WA_MAX_RETRIES", "3")),
    ordered=os.environ.get("WA_ORDERED", "0") == "1",
    recovery_timeout=float(os.environ.get("WA_RECOVERY_TIMEOUT", "30")),
    skip_stale_statuses=os.environ.get("WA_SKIP_STALE", "0") == "1",
    replicas=int(os.environ.get("WA_REPLICAS", "0")),
)

_SLEEP_MS = float(os.environ.get("WA_SLEEP_MS", "0"))
_FAIL_TWICE = set(filter(None, os.environ.get("WA_FAIL_TWICE", "").split(",")))
_FAIL_ALWAYS = set(filter(None, os.environ.get("WA_FAIL_ALWAYS", "").split(",")))
_SLOW = set(filter(None, os.environ.get("WA_SLOW", "").split(",")))
_SLOW_S = float(os.environ.get("WA_SLOW_S", "3"))
_BASE = set(filter(None, os.environ.get("WA_BASE_EXCEPTION", "").split(",")))
_HOLD_GIL = set(filter(None, os.environ.get("WA_HOLD_GIL", "").split(",")))
_HOLD_GIL_S = float(os.environ.get("WA_HOLD_GIL_S", "6"))


class Escaped(BaseException):
    """Not an Exception: what the worker cannot treat as a callback failure."""


def log(**fields: object) -> None:
    line = json.dumps({"pid": os.getpid(), "t": time.time(), **fields}) + "\n"
    fd = os.open(os.environ["WA_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _tries(key: str) -> int:
    """How many times this process tree has started ``key`` (a marker file per key)."""
    marker = f"{os.environ['WA_EVENTS']}.tries.{key}"
    fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    return os.path.getsize(marker)


def _nap() -> None:
    if _SLEEP_MS:
        time.sleep(random.random() * _SLEEP_MS / 1000)


@wa.on_message("text")
def on_text(message: Message, ctx: EventContext) -> None:
    body = message.text.body if message.text else ""
    conversation = f"{ctx.phone_number_id}:{message.from_}"
    tries = _tries(message.id or body)
    log(cb="on_text", phase="start", id=message.id, body=body, conv=conversation, attempt=tries)
    _nap()
    if body in _SLOW or message.id in _SLOW:
        time.sleep(_SLOW_S)
    if (body in _HOLD_GIL or message.id in _HOLD_GIL) and tries == 1:
        # libc's usleep through ctypes.PyDLL keeps the GIL (CDLL would release it).
        ctypes.PyDLL(None).usleep(int(_HOLD_GIL_S * 1_000_000))
    if (body in _BASE or message.id in _BASE) and os.path.exists(os.environ["WA_EVENTS"] + ".broken"):
        log(cb="on_text", phase="fail", id=message.id, body=body, conv=conversation, attempt=tries)
        raise Escaped("escaping the callback's error handling on purpose")
    if (body in _FAIL_TWICE or message.id in _FAIL_TWICE) and tries <= 2:
        log(cb="on_text", phase="fail", id=message.id, body=body, conv=conversation, attempt=tries)
        raise RuntimeError(f"failing on purpose, try {tries}")
    if (body in _FAIL_ALWAYS or message.id in _FAIL_ALWAYS) and os.path.exists(os.environ["WA_EVENTS"] + ".broken"):
        log(cb="on_text", phase="fail", id=message.id, body=body, conv=conversation, attempt=tries)
        raise RuntimeError("always failing on purpose")
    log(cb="on_text", phase="end", id=message.id, body=body, conv=conversation, attempt=tries)


@wa.on_message()
def on_any(message: Message) -> None:
    log(cb="on_any", phase="end", id=message.id)


@wa.on_status()
def on_status(status: Status) -> None:
    log(cb="on_status", phase="end", id=status.id, status=status.status)
