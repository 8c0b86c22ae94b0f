"""The enqueue command packed by hand: exactly the RESP redis-py would send, and what Redis runs."""

from __future__ import annotations

import hashlib
import socket

import pytest
import redis
from redis.connection import Connection

from tests.conftest import RedisServer
from wa_middleware.web.enqueue import Recording
from wa_middleware.web.wire import ENQUEUE_LUA, EnqueueCommand, pack

LIST, HASH = "wire:q", "wire:q.msgs"


def command_of(payload: bytes) -> list[list[bytes]]:
    """Parse a run of RESP arrays of bulk strings (all that `pack` writes) back into arguments."""
    commands, at = [], 0
    while at < len(payload):
        assert payload[at : at + 1] == b"*"
        end = payload.index(b"\r\n", at)
        count, at, args = int(payload[at + 1 : end]), end + 2, []
        for _ in range(count):
            assert payload[at : at + 1] == b"$"
            end = payload.index(b"\r\n", at)
            size = int(payload[at + 1 : end])
            args.append(payload[end + 2 : end + 2 + size])
            assert payload[end + 2 + size : end + 4 + size] == b"\r\n"
            at = end + 4 + size
        commands.append(args)
    return commands


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("PING",), id="one"),
        pytest.param(("WAIT", 1, 250), id="ints"),
        pytest.param(("SET", "clé", b"\x00\r\n\xff"), id="utf8-and-binary"),
        pytest.param(("SET", "k", b""), id="empty"),
    ],
)
def test_pack_is_what_redis_py_sends(args: tuple[bytes | str | int, ...]) -> None:
    assert pack(*args) == b"".join(Connection().pack_command(*args))


def test_the_script_call_for_a_batch() -> None:
    command = EnqueueCommand(LIST, HASH)
    items = [("id-1", b"data\r\n1"), ("id-2", b"")]
    sha = hashlib.sha1(ENQUEUE_LUA.encode()).hexdigest().encode()
    assert command_of(command.pack(items)) == [
        [b"EVALSHA", sha, b"2", LIST.encode(), HASH.encode(), b"0", b"0", b"id-1", b"data\r\n1", b"id-2", b""]
    ]
    # After NOSCRIPT: the script itself, the rest unchanged; WAIT pipelined behind it.
    assert command_of(command.pack(items[:1], load=True, wait=(2, 500))) == [
        [b"EVAL", ENQUEUE_LUA.encode(), b"2", LIST.encode(), HASH.encode(), b"0", b"0", b"id-1", b"data\r\n1"],
        [b"WAIT", b"2", b"500"],
    ]


def test_the_script_call_with_a_recording() -> None:
    command = EnqueueCommand(LIST, HASH, Recording("wire:rec", max_count=100, max_age=60))
    [args] = command_of(command.pack([("id-1", b"x")]))
    assert args[:6] == [b"EVALSHA", command.sha.encode(), b"3", LIST.encode(), HASH.encode(), b"wire:rec"]
    assert args[6] == b"100" and int(args[7]) > 0 and args[8:] == [b"id-1", b"x"]


def roundtrip(server: RedisServer, payload: bytes, replies: int = 1) -> list[object]:
    conn = redis.Redis.from_url(server.url).connection_pool.make_connection()
    try:
        conn.send_packed_command([payload], check_health=False)
        out: list[object] = []
        for _ in range(replies):
            try:
                out.append(conn.read_response())
            except redis.ResponseError as exc:
                out.append(exc)
        return out
    finally:
        conn.disconnect()


def test_redis_runs_it_as_dramatiq_would_store_it(redis_server: RedisServer) -> None:
    command = EnqueueCommand(LIST, HASH, Recording("wire:rec", max_count=100, max_age=60))
    client = redis_server.client()
    assert client.script_load(ENQUEUE_LUA) == command.sha  # the sha Redis itself computes
    items = [(f"id-{i}", f"body-{i}".encode()) for i in range(3)]
    assert roundtrip(redis_server, command.pack(items)) == [3]
    assert client.lrange(LIST, 0, -1) == [b"id-0", b"id-1", b"id-2"]
    assert client.hgetall(HASH) == {b"id-0": b"body-0", b"id-1": b"body-1", b"id-2": b"body-2"}
    assert client.xlen("wire:rec") == 3
    client.close()


def test_noscript_then_the_script_itself(redis_server: RedisServer) -> None:
    command = EnqueueCommand(LIST, HASH)
    client = redis_server.client()
    client.script_flush()
    [reply] = roundtrip(redis_server, command.pack([("a", b"1")]))
    assert isinstance(reply, redis.exceptions.NoScriptError)
    assert client.llen(LIST) == 0  # nothing ran
    # EVAL runs it and caches it: the next EVALSHA needs no second try.
    assert roundtrip(redis_server, command.pack([("a", b"1")], load=True, wait=(0, 1)), replies=2) == [1, 0]
    assert roundtrip(redis_server, command.pack([("b", b"2")])) == [1]
    assert client.lrange(LIST, 0, -1) == [b"a", b"b"]
    client.close()


def test_a_raw_socket_sees_one_reply_per_command(redis_server: RedisServer) -> None:
    """Pipelined script + WAIT: two replies, in order, nothing else on the wire."""
    with socket.create_connection(("127.0.0.1", redis_server.port)) as sock:
        redis_server.client().script_load(ENQUEUE_LUA)
        sock.sendall(EnqueueCommand(LIST, HASH).pack([("x", b"y")], wait=(0, 1)))
        received = b""
        while received.count(b"\r\n") < 2:
            received += sock.recv(100)
    assert received == b":1\r\n:0\r\n"
