"""Done-marks: what remembers, once a unit has run, that it must not run again, in ~8 bytes.

A unit in flight is claimed in its event's ``idem:`` hash (``c|<owner>``), which the scripts need
while it runs (who owns it, fencing, hand-overs). Once it is done that claim is deleted and a
*done-mark* is written instead: a 64-bit digest of (event key, callback), added to a Redis set of
integers. Redis keeps a small set of integers as an *intset*, a sorted array of 8-byte values,
so a mark costs about 8 bytes instead of the ~234 bytes of a hash and a TTL per event (measured:
`docs/reliability.md`).

The sets are bucketed by the hour of the event's **own timestamp** (a redelivery carries the
same timestamp, so it looks in the same bucket), and each bucket expires as a whole
``dedupe_ttl`` after its hour ends: nothing expires key by key. A bucket splits as it fills so
that no set outgrows the intset encoding (Redis's ``set-max-intset-entries``, 512 by default):
level ``j`` of an hour has ``FANOUT ** j`` sets, a mark goes to the deepest level of its hour,
and a lookup checks every level (a handful of binary searches, inside the PLAN script).

Events without a usable timestamp (value-level errors, other changes, a documentation placeholder,
a time far in the future or older than the window) are bucketed by the hour they are planned in
(``w<hour>``) instead, and a lookup checks every such hour of the window: as many lookups as the
window has hours, for events that are rare. ``NO_MARK`` (the former form, ``d`` in the hash with a
TTL) is only what the scripts still read from a Redis written by an earlier version.

Two different units share a mark only if their 64-bit digests collide within one hour's
buckets; at 3,300 events/s (12 million an hour) that is a chance of about 4 in a million per
hour that one event is taken for a redelivery.
"""

from __future__ import annotations

import hashlib

from ..events.decode import Event

__all__ = ["FANOUT", "MAX_LEVEL", "NO_MARK", "SPLIT_AT", "Mark", "mark_of", "progress_arg"]

#: (hour, shard bits, digest): the hour is "" when the unit keeps the former form.
Mark = tuple[str, int, str]
NO_MARK: Mark = ("", 0, "")

#: How many sets a level has per set of the level above it.
FANOUT = 4
#: A set this full makes its hour's next marks go one level deeper (below Redis's default 512).
SPLIT_AT = 480
#: The deepest level (4 ** 12 = 16.7 million sets an hour: 8 billion marks).
MAX_LEVEL = 12
#: Shard bits handed to Lua (exact in its doubles): enough for `MAX_LEVEL` levels.
_SHARD_BITS = 2 * MAX_LEVEL
#: An event time further ahead than this is not trusted for bucketing (a sender's wrong clock).
_AHEAD = 86400


def mark_of(event: Event, key: str, callback: str, *, now: float, ttl: float) -> Mark:
    """The done-mark of the unit (``event``, ``callback``) whose idempotency key is ``key``.

    :param now: the worker's time (seconds); only decides whether the event's own time is usable.
    :param ttl: the once-per-event window (seconds).
    """
    value = _digest(f"{key}\x00{callback}")
    seconds = _event_time(event)
    if seconds is None or seconds > now + _AHEAD or seconds + ttl < now + 3600:
        hour = f"w{int(now) // 3600}"  # no time of its own to go by: the hour it is planned in
    else:
        hour = str(seconds // 3600)
    return (hour, value & ((1 << _SHARD_BITS) - 1), str(value))


def progress_arg(message_id: str, rank: int, top: int, hour: str, *, now: float) -> str:
    """PLAN's ``stale`` argument for a status of rank ``rank`` (of ``1..top``) of message
    ``message_id``, whose own time is in ``hour`` ("" when it has no usable time: never stale).

    A status records that its message reached its rank with a done-mark of ``p:<message id>:<rank>``
    in the bucket of its own hour. A status is stale when a mark of a higher rank is in any hour
    from its own to now: the later status happened after it (its time is not earlier), so that is
    where its mark is. Usually an hour or two of buckets; at most the window's. A message's
    progress costs one 8-byte mark per status, where a key per message cost about 166 bytes.
    """
    if not hour or hour.startswith("w"):
        return ""

    def pair(r: int) -> str:
        value = _digest(f"p:{message_id}:{r}")
        return f"{value & ((1 << _SHARD_BITS) - 1)}:{value}"

    higher = ",".join(pair(r) for r in range(rank + 1, top + 1))
    return f"{hour}|{int(now) // 3600}|{pair(rank)}|{higher}"


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def _event_time(event: Event) -> int | None:
    raw = getattr(event.data, "timestamp", None)
    if raw is None or raw == "":
        return None
    try:
        seconds = int(raw)
    except (TypeError, ValueError):
        return None  # a placeholder such as "<TIMESTAMP>"
    return seconds if seconds > 0 else None
