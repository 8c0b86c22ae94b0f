"""The worker's Lua scripts (``lua/*.lua``), loaded once, their record bindings generated.

A script reads its records with ``--@bind NAME`` lines, which become the ``local`` assignments of
the fields `finish.RECORDS` names for that record, so the field order lives in Python alone. Keys
come in ``KEYS`` from `wa_middleware.keys.KeyLayout`; no script builds a key name.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from redis.commands.core import Script

from ..keys import KeyLayout
from . import marks
from .finish import OPS, RECORDS, pack

__all__ = ["FINISH", "NAMES", "PEEK", "PLAN", "RECOVER", "REQUEUE", "Scripts", "finish_keys", "load", "plan_keys"]

_BIND = re.compile(r"^(\s*)--@bind (\w+)\s*$", re.MULTILINE)


def _binding(match: re.Match[str]) -> str:
    indent, name = match.group(1), match.group(2)
    fields, after_code = RECORDS[name]
    first = 1 if after_code else 0  # an op's fields follow its code at ARGV[i]
    last = first + len(fields) - 1
    lines = [f"local {', '.join(fields)} = unpack(ARGV, i + {first}, i + {last})", f"i = i + {last + 1}"]
    if "data" in fields:  # binary: in a slot of its own (finish.pack)
        lines.append("data = SLOTS[tonumber(data)]")
    return "\n".join(indent + line for line in lines)


_PACKED = re.compile(r"^--@packed\s*$", re.MULTILINE)


def _packed(match: re.Match[str]) -> str:
    # The arguments as finish.pack sent them: ARGV is the unpacked array from here on.
    return "local SLOTS = ARGV\nlocal ARGV = cmsgpack.unpack(SLOTS[1])"


_NOW = re.compile(r"^(\s*)--@now\s*$", re.MULTILINE)


def _now(match: re.Match[str]) -> str:
    # Redis's clock, not the worker's: leases must not depend on the machines' clocks agreeing.
    indent = match.group(1)
    return (
        f'{indent}local clock = redis.call("time")\n{indent}local now = clock[1] * 1000 + math.floor(clock[2] / 1000)'
    )


_ARITY = re.compile(r"^(\s*)--@arity\s*$", re.MULTILINE)


def _arity(match: re.Match[str]) -> str:
    table = ", ".join(f"{code} = {len(fields)}" for code, fields in OPS.items())
    return f"{match.group(1)}local ARITY = {{{table}}}"


_INCLUDE = re.compile(r"^--@include (\w+)\s*$", re.MULTILINE)
_MARKS = re.compile(r"^--@marks\s*$", re.MULTILINE)


def _include(match: re.Match[str]) -> str:
    source = (Path(__file__).parent / "lua" / f"_{match.group(1)}.lua").read_text(encoding="utf-8")
    # The done-marks' constants come from marks.py: one copy of each.
    constants = f"local FANOUT, SPLIT_AT, MAX_LEVEL = {marks.FANOUT}, {marks.SPLIT_AT}, {marks.MAX_LEVEL}"
    return _MARKS.sub(constants, source)


def _source(name: str) -> str:
    return (Path(__file__).parent / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def load(name: str, *, flags: bool = True) -> str:
    """The source of ``lua/<name>.lua`` with its bindings generated.

    :param flags: keep the ``#!lua flags=...`` line (Redis 7 and later); without it, for older servers.
    """
    source = _source(name)
    if not flags and source.startswith("#!"):
        source = source.split("\n", 1)[1]
    source = _INCLUDE.sub(_include, source)
    return _PACKED.sub(_packed, _ARITY.sub(_arity, _NOW.sub(_now, _BIND.sub(_binding, source))))


NAMES = ("peek", "plan", "finish", "recover", "requeue")
#: The scripts whose arguments travel packed (`finish.pack`): those whose source says ``--@packed``.
PACKED = frozenset(name for name in NAMES if _PACKED.search(_source(name)))
PEEK = load("peek")
PLAN = load("plan")
FINISH = load("finish")
RECOVER = load("recover")
REQUEUE = load("requeue")


def plan_keys(k: KeyLayout, broker_id: str) -> list[str]:
    """The KEYS of PLAN, in the order ``plan.lua`` reads them."""
    return [k.queue, k.acks(broker_id), k.heartbeats, k.stats, k.units, k.epoch, k.done_marks]


def finish_keys(k: KeyLayout) -> list[str]:
    """The KEYS of FINISH, in the order ``finish.lua`` reads them."""
    return [
        k.queue, k.messages, k.stats, k.units, k.dead_letters, k.dead_messages, k.heartbeats, k.retries, k.done_marks,
    ]  # fmt: skip


class Scripts:
    """The scripts registered on one client, loaded on first use with or without their ``#!lua``
    flags line, by the server's version (flags, such as ``allow-oom``, need Redis 7)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._scripts: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Any]:
        with self._lock:
            if self._scripts is None:
                version = str(self.client.info("server").get("redis_version", "0"))
                flags = int(version.split(".", 1)[0] or 0) >= 7
                self._scripts = {
                    name: (_Packed if name in PACKED else Script)(self.client, load(name, flags=flags))
                    for name in NAMES
                }
            return self._scripts

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._load()[name]


class _Packed(Script):
    """A script called with its arguments packed (`finish.pack`)."""

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        return super().__call__(keys, pack(list(args or ())), client)
