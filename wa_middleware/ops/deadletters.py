"""Inspect, replay and purge dead letters: units whose last try failed, kept in dramatiq's dead-letter queue.

A dead letter is the dramatiq message of one (event, callback) unit, as it was for its last try,
with the error (``wa_error``), the traceback (``traceback``), the number of the last try
(``wa_attempt``) and, for an ordered callback, a note that its conversation moved on (``wa_note``).
dramatiq drops dead letters older than its ``dead_message_ttl`` (7 days). Replaying one runs the
callback again once, unordered (the conversation has moved on), with a fresh count of retries.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from ..redis_url import sync_client
from ..worker.encoder import MsgpackEncoder

if TYPE_CHECKING:
    from ..settings import BrokerLink

__all__ = ["DeadLetter", "DeadLetters"]

_decode = MsgpackEncoder().decode
_encode = MsgpackEncoder().encode


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter.

    :ivar id: its id in the dead-letter queue.
    :ivar dead_at: when it was dead-lettered (ms since the epoch).
    :ivar message: the dramatiq message, as a dict.
    """

    id: str
    dead_at: int
    message: dict[str, Any]

    @property
    def callback(self) -> str | None:
        args = self.message.get("args") or []
        return str(args[0]) if self.message.get("actor_name", "").endswith(".callback") and args else None

    @property
    def kind(self) -> str | None:
        args = self.message.get("args") or []
        return str(args[1]) if self.callback and len(args) > 1 else None

    @property
    def event_key(self) -> str | None:
        args = self.message.get("args") or []
        return str(args[4]).split(":idem:", 1)[-1] if self.callback and len(args) > 4 else None

    @property
    def error(self) -> str:
        options = self.message.get("options") or {}
        if options.get("wa_error"):
            return str(options["wa_error"])
        tb = str(options.get("traceback") or "").strip().splitlines()
        return tb[-1] if tb else "?"

    def event(self) -> Any:
        """The event and its context as JSON builtins, for display."""
        args = self.message.get("args") or []
        if self.callback and len(args) > 3:
            return {"event": msgspec.msgpack.decode(args[2]), "ctx": msgspec.msgpack.decode(args[3])}
        return None

    def summary(self) -> str:
        when = datetime.fromtimestamp(self.dead_at / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        what = f"{self.callback} on {self.kind} {self.event_key}" if self.callback else self.message.get("actor_name")
        first = self.error.strip().splitlines()[0] if self.error.strip() else "?"
        return f"{self.id}  {when}  {what}  {first}"


#: Move one dead letter back onto the queue; for a unit, hand its idempotency claim to the replay.
#: ARGV: xq, queue, id, new id, data, idem key ("" if none), callback, owner
_REPLAY = """
local xq, queue, id, new_id, data = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call("zrem", xq, id) == 0 then return 0 end
redis.call("hdel", xq .. ".msgs", id)
if ARGV[6] ~= "" then redis.call("hset", ARGV[6], ARGV[7], "c|" .. ARGV[8]) end
redis.call("hset", queue .. ".msgs", new_id, data)
redis.call("rpush", queue, new_id)
return 1
"""


class DeadLetters:
    """The dead-letter queue of a `Webhook`.

    :param webhook: whose queue: a `Webhook`, or any `BrokerLink`.
    """

    def __init__(self, webhook: BrokerLink) -> None:
        keys = webhook.keys
        self.keys = keys
        self.queue = keys.queue
        self.xq = keys.dead_letters
        self.client = sync_client(webhook.broker_url)

    def close(self) -> None:
        self.client.close()

    def list(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        entries: list[tuple[bytes, float]] = self.client.zrange(  # type: ignore[assignment]
            self.xq, 0, -1 if limit is None else limit - 1, withscores=True
        )
        if not entries:
            return []
        datas: list[bytes | None] = self.client.hmget(self.keys.dead_messages, [mid for mid, _ in entries])  # type: ignore[assignment]
        out = []
        for (mid, score), data in zip(entries, datas, strict=True):
            if data is not None:
                out.append(DeadLetter(mid.decode(), int(score), _decode(data)))
        return out

    def count(self) -> int:
        """How many dead letters there are."""
        return int(self.client.zcard(self.xq))

    def get(self, letter_id: str) -> DeadLetter | None:
        data: bytes | None = self.client.hget(self.keys.dead_messages, letter_id)  # type: ignore[assignment]
        if data is None:
            return None
        score: float | None = self.client.zscore(self.xq, letter_id)
        return DeadLetter(letter_id, int(score or 0), _decode(data))

    def replay(self, ids: Iterable[str] | None = None) -> int:
        """Put dead letters (all when ``ids`` is None) back on the queue; return how many."""
        script = self.client.register_script(_REPLAY)
        letters = self.list() if ids is None else [x for x in (self.get(i) for i in ids) if x is not None]
        count = 0
        for letter in letters:
            message = dict(letter.message)
            new_id = str(uuid.uuid4())
            options = {
                k: v for k, v in (message.get("options") or {}).items()
                if k not in ("traceback", "wa_error", "wa_note", "eta", "retries")
            }  # fmt: skip
            options["redis_message_id"] = new_id
            options["wa_replays"] = int(options.get("wa_replays", 0)) + 1
            key = field = owner = ""
            if letter.callback:
                args = list(message["args"])
                args[5] = ""  # its conversation moved on: the replay runs unordered
                message["args"] = args
                options["wa_attempt"] = 0
                key, field, owner = str(args[4]), str(args[0]), str(message["message_id"])
            message["options"] = options
            message["queue_name"] = self.keys.queue_name
            message["message_timestamp"] = int(time.time() * 1000)
            data = _encode(message)
            count += int(script(args=[self.xq, self.queue, letter.id, new_id, data, key, field, owner]))
        return count

    def purge(self, ids: Iterable[str] | None = None) -> int:
        """Delete dead letters (all when ``ids`` is None); return how many."""
        if ids is None:
            count = int(self.client.zcard(self.xq))
            self.client.delete(self.xq, self.keys.dead_messages)
            return count
        ids = list(ids)
        if not ids:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.xq, *ids)
        pipe.hdel(self.keys.dead_messages, *ids)
        removed, _ = pipe.execute()
        return int(removed)
