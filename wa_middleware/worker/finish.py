"""The records the worker's Lua scripts read: one schema, shared by Python and Lua.

Each table below names the fields of one record in argument order. Python builds records only
through `Ops` and `plan_message` / `plan_unit` / `plan_own`, which take those names as keywords, and
`scripts.py` generates the Lua lines that read them back (``--@bind NAME`` in ``lua/*.lua``), so the
two sides cannot disagree on an arity or an order.

The arguments of PLAN and FINISH travel packed (`pack`): one msgpack array of strings in ``ARGV[1]``,
which the script unpacks in C, and the ``data`` fields (stored message bodies, binary) in the
``ARGV`` slots after it, their packed field holding the slot's index. redis-py encodes and frames
every argument in Python (about 0.45 us each, measured: 107 us for a FINISH call of 16 deliveries,
238 arguments); packed, the same call costs a few microseconds.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .marks import NO_MARK, Mark

__all__ = [
    "FINISH_MESSAGE", "OPS", "PLAN_MESSAGE", "PLAN_OWN", "PLAN_UNIT", "Blob", "Ops", "finish_message", "pack",
    "plan_message", "plan_own", "plan_unit",
]  # fmt: skip

#: The fields of the lane operations ("pop" and "drop", which finish.lua reads with one binding).
_LANE_UNIT = ("lane", "uid")

#: FINISH operations: op code -> its fields.
OPS: dict[str, tuple[str, ...]] = {
    # The unit ran, stopped, or needs no run: remember it as done (its claim gives way to a
    # done-mark, `marks.py`, or to "d" in the claim's hash when ``hour`` is "").
    "done": ("key", "field", "hour", "shard", "digest"),
    # Its next try is the message ``next_rid`` (owned by unit id ``owner``), due at ``due`` (ms): it
    # waits in the retries set, never in a worker's memory.
    "retry": ("key", "field", "owner", "next_rid", "data", "due"),
    # Dead-lettered as message ``dead_rid``.
    "dead": ("key", "field", "owner", "dead_rid", "data"),
    # An ordered unit of the message that waits in its lane (behind a failed one, or planned "q"): its
    # own message is stored, enqueued at its turn (at once if its turn has come already).
    "wait": ("key", "field", "uid", "lane", "data"),
    # Move the lane on if ``uid`` is its head; the next head's stored message is enqueued.
    "pop": _LANE_UNIT,
    # A unit of a delivery that will not run here (rejected, or skipped by a middleware): at its lane's
    # head, as "pop"; behind others, taken out of the lane with its stored message, if any, so that the
    # lane does not stop at it (its turn would come with nothing stored to run).
    "drop": _LANE_UNIT,
    # Move the body of message ``buried`` to the dead letters (a message dramatiq rejected).
    "bury": ("buried",),
}

#: FINISH: the record that starts each message of a batch; ``count`` operations follow.
FINISH_MESSAGE = ("rid", "acks", "bid", "take", "count")
#: PLAN: the record that starts each fetched message; ``count`` units follow (-1: one PLAN_OWN).
#: ``group``: "" or the batch the message will run in: the units of one conversation within one
#: batch all run (in order, in that batch's thread) instead of waiting for each other in the lane.
PLAN_MESSAGE = ("rid", "mid", "count", "group")
#: PLAN: one unit of a delivery. ``stale``: "" or "<status progress key>|<rank>"; ``hour``,
#: ``shard``, ``digest``: its done-mark (`marks.py`; ``hour`` "" for none). ``after``: "" or the
#: unit this process last claimed to run in the same lane (the dispatcher's follow-ups): right
#: behind it, this one is claimed to run too, by the work item that runs that one, after it.
PLAN_UNIT = ("key", "field", "lane", "uid", "stale", "hour", "shard", "digest", "after")
#: PLAN: a unit's own message (a retry, a lane head): its idempotency key, callback and lane.
PLAN_OWN = ("key", "field", "lane")

#: Every record the Lua scripts bind, by the name ``--@bind`` uses.
RECORDS: dict[str, tuple[tuple[str, ...], bool]] = {
    **{code: (fields, True) for code, fields in OPS.items()},  # after an op code
    "FINISH_MESSAGE": (FINISH_MESSAGE, False),
    "PLAN_MESSAGE": (PLAN_MESSAGE, False),
    "PLAN_UNIT": (PLAN_UNIT, False),
    "PLAN_OWN": (PLAN_OWN, False),
}


class Blob(bytes):
    """The value of a ``data`` field: binary, it travels in an ``ARGV`` slot of its own (`pack`)."""

    __slots__ = ()


_encode = msgspec.msgpack.Encoder().encode


def pack(args: list[Any]) -> list[bytes]:
    """The ``ARGV`` of a packed script call: ``args`` as one msgpack array of strings, then each `Blob`
    (replaced in the array by the index of its slot, as a string). Numbers go as their decimal string,
    as redis-py would send them; other bytes must be UTF-8 (a rid read back from Redis)."""
    out: list[str] = []
    slots: list[bytes] = [b""]
    for value in args:
        if type(value) is str:
            out.append(value)
        elif isinstance(value, Blob):
            slots.append(value)
            out.append(str(len(slots)))
        elif isinstance(value, bytes):
            out.append(value.decode())
        else:
            out.append(str(value))
    slots[0] = _encode(out)
    return slots


def _record(fields: tuple[str, ...], values: dict[str, Any]) -> list[Any]:
    if values.keys() != set(fields):
        raise TypeError(f"expected fields {fields}, got {sorted(values)}")
    return [values[name] for name in fields]


def finish_message(**values: Any) -> list[Any]:
    return _record(FINISH_MESSAGE, values)


def plan_message(**values: Any) -> list[Any]:
    return _record(PLAN_MESSAGE, values)


def plan_unit(**values: Any) -> list[Any]:
    return _record(PLAN_UNIT, values)


def plan_own(**values: Any) -> list[Any]:
    return _record(PLAN_OWN, values)


class Ops(list[Any]):
    """The operations of one FINISH call, flat, in the order they are applied."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        super().__init__()
        #: How many operations (not fields) it holds.
        self.n = 0

    def add(self, code: str, **values: Any) -> None:
        record = _record(OPS[code], values)
        self.append(code)
        self.extend(record)
        self.n += 1

    def done(self, key: str, field: str, mark: Mark = NO_MARK) -> None:
        hour, shard, digest = mark
        self.add("done", key=key, field=field, hour=hour, shard=shard, digest=digest)

    def retry(self, key: str, field: str, owner: str, next_rid: str, data: bytes, due: int) -> None:
        self.add("retry", key=key, field=field, owner=owner, next_rid=next_rid, data=Blob(data), due=due)

    def dead(self, key: str, field: str, owner: str, dead_rid: str, data: bytes) -> None:
        self.add("dead", key=key, field=field, owner=owner, dead_rid=dead_rid, data=Blob(data))

    def wait(self, key: str, field: str, uid: str, lane: str, data: bytes) -> None:
        self.add("wait", key=key, field=field, uid=uid, lane=lane, data=Blob(data))

    def pop_lane(self, lane: str, uid: str) -> None:
        self.add("pop", lane=lane, uid=uid)

    def drop_lane(self, lane: str, uid: str) -> None:
        self.add("drop", lane=lane, uid=uid)

    def bury(self, buried: str) -> None:
        self.add("bury", buried=buried)

    def records(self) -> list[tuple[str, dict[str, Any]]]:
        """The operations read back as (code, fields) pairs, as the Lua side reads them (for tests)."""
        out: list[tuple[str, dict[str, Any]]] = []
        i = 0
        while i < len(self):
            code = self[i]
            fields = OPS[code]
            out.append((code, dict(zip(fields, self[i + 1 : i + 1 + len(fields)], strict=True))))
            i += 1 + len(fields)
        return out
