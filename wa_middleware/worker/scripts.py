"""The worker's Lua scripts (``lua/*.lua``), loaded once, their record bindings generated.

A script reads its records with ``--@bind NAME`` lines, which become the ``local`` assignments of
the fields `finish.RECORDS` names for that record, so the field order lives in Python alone. Keys
come in ``KEYS`` from `wa_middleware.keys.KeyLayout`; no script builds a key name.
"""

from __future__ import annotations

import re
from pathlib import Path

from .finish import RECORDS

__all__ = ["FINISH", "PEEK", "PLAN", "load"]

_BIND = re.compile(r"^(\s*)--@bind (\w+)\s*$", re.MULTILINE)


def _binding(match: re.Match[str]) -> str:
    indent, name = match.group(1), match.group(2)
    fields, after_code = RECORDS[name]
    first = 1 if after_code else 0  # an op's fields follow its code at ARGV[i]
    last = first + len(fields) - 1
    return f"{indent}local {', '.join(fields)} = unpack(ARGV, i + {first}, i + {last})\n{indent}i = i + {last + 1}"


def load(name: str) -> str:
    """The source of ``lua/<name>.lua`` with its bindings generated."""
    source = (Path(__file__).parent / "lua" / f"{name}.lua").read_text(encoding="utf-8")
    return _BIND.sub(_binding, source)


PEEK = load("peek")
PLAN = load("plan")
FINISH = load("finish")
