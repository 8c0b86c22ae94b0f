"""The request path's one Redis command, packed into RESP bytes by hand.

The request path sends a single command shape: `ENQUEUE_LUA` over a batch of messages, then
``WAIT`` when replicas must have the write. redis-py's general command path (encoding each
argument, a pool checkout with its readiness probe, retries, observability hooks) costs more CPU
than the round trip it wraps: measured on one connection, ``client.evalsha(...)`` took 120-135 us
of CPU per call where sending the same bytes with ``Connection.send_packed_command`` and reading
the reply took 40-48 us, and a web request does little else. So the constant part of the command
is encoded once here, each batch only appends its ids and bodies, and the enqueuers send the
result on a connection of their own (redis-py's connection still does connect, AUTH, TLS and the
reply parsing).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

__all__ = ["ENQUEUE_LUA", "EnqueueCommand", "Recording", "pack"]

#: The broker's own enqueue (HSET the body, RPUSH the id) for a whole batch, plus the optional
#: recording, as one atomic command: one request and one reply, where MULTI/HSET/RPUSH/EXEC
#: costs four of each (most of the client's CPU when requests arrive one at a time).
#: KEYS: list, hash[, stream]; ARGV: stream max length, stream min id, then id, data, id, data...
ENQUEUE_LUA = """
local n = #ARGV
for i = 3, n, 2 do redis.call('hset', KEYS[2], ARGV[i], ARGV[i + 1]) end
for i = 3, n, 2 do redis.call('rpush', KEYS[1], ARGV[i]) end
if KEYS[3] then
  for i = 3, n, 2 do redis.call('xadd', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[i + 1]) end
  redis.call('xtrim', KEYS[3], 'MINID', '~', ARGV[2])
end
return (n - 2) / 2
"""


class Recording:
    """Keep accepted deliveries in a Redis stream, trimmed by count and by age (see `replay`).

    :param key: the stream's key.
    :param max_count: entries kept at most (trimmed approximately, as Redis does cheaply).
    :param max_age: seconds an entry is kept at most.
    """

    __slots__ = ("key", "max_age_ms", "max_count")

    def __init__(self, key: str, max_count: int, max_age: float) -> None:
        self.key = key
        self.max_count = max_count
        self.max_age_ms = int(max_age * 1000)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings (``str`` as UTF-8, ``int`` in decimal)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(_bulk(arg))
    return b"".join(parts)


class EnqueueCommand:
    """`ENQUEUE_LUA` for a batch, as bytes: ``EVALSHA`` (or ``EVAL`` once Redis answered
    ``NOSCRIPT``: it then runs and caches the script), optionally followed by a pipelined ``WAIT``.

    :param list_key: the queue (dramatiq's list of message ids).
    :param hash_key: the queue's message hash (id -> message).
    :param recording: when set, every message is also added to its stream.
    """

    __slots__ = ("_by_body", "_by_sha", "_fixed_args", "_recording", "sha")

    def __init__(self, list_key: str, hash_key: str, recording: Recording | None = None) -> None:
        keys = [list_key, hash_key] if recording is None else [list_key, hash_key, recording.key]
        # The two stream arguments are unused without a recording: then they are constant too.
        constant = _bulk(b"%d" % len(keys)) + b"".join(_bulk(k.encode()) for k in keys)
        if recording is None:
            constant += _bulk(b"0") * 2
        script = ENQUEUE_LUA.encode()
        self.sha = hashlib.sha1(script).hexdigest()
        self._by_sha = _bulk(b"EVALSHA") + _bulk(self.sha.encode()) + constant
        self._by_body = _bulk(b"EVAL") + _bulk(script) + constant
        self._recording = recording
        self._fixed_args = 3 + len(keys) + 2

    def pack(
        self, items: Sequence[tuple[str, bytes]], *, load: bool = False, wait: tuple[int, int] | None = None
    ) -> bytes:
        """The bytes for one batch of ``(message id, data)``.

        :param load: send the script itself (``EVAL``), after a ``NOSCRIPT``.
        :param wait: ``(replicas, milliseconds)``: append ``WAIT``, whose reply follows the script's.
        """
        parts = [b"*%d\r\n" % (self._fixed_args + 2 * len(items)), self._by_body if load else self._by_sha]
        recording = self._recording
        if recording is not None:
            min_id = int(time.time() * 1000) - recording.max_age_ms
            parts += (_bulk(b"%d" % recording.max_count), _bulk(b"%d" % min_id))
        for message_id, data in items:
            encoded_id = message_id.encode()
            parts += (b"$%d\r\n%s\r\n$%d\r\n" % (len(encoded_id), encoded_id, len(data)), data, b"\r\n")
        if wait is not None:
            parts.append(pack("WAIT", wait[0], wait[1]))
        return b"".join(parts)
