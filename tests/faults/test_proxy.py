"""The fault-injecting Redis proxy (tests/faults/proxy.py), against a real redis-server and redis-py.

First that it is transparent (plain commands, pipelines, large values, scripts, RESP3, pub/sub),
then that each fault does what it says: a lost reply (the command took effect), a lost request (it
did not), a frozen link, a cut, refused connections; and that it idles without spinning.
"""

from __future__ import annotations

import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import RedisServer, wait_until
from tests.faults.proxy import (
    Command,
    ProtocolError,
    RedisProxy,
    ReplyScanner,
    RequestParser,
    command_matcher,
    sha1_of,
)

INCR_LUA = "return redis.call('INCR', KEYS[1])"
ECHO_LUA = "return ARGV[1]"
INCR_SHA = sha1_of(INCR_LUA)

Connect = Callable[..., redis.Redis]


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[RedisProxy]:
    with RedisProxy(redis_server.port) as running:
        yield running
    assert running.errors == []
    assert running.connections == 0


@pytest.fixture
def direct(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client straight to Redis, to see what really happened there."""
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def connect(proxy: RedisProxy) -> Iterator[Connect]:
    """``connect(**kwargs)``: a redis-py client through the proxy, without client-side retries."""
    made: list[redis.Redis] = []

    def make(**kwargs: object) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        client = redis.Redis(host="127.0.0.1", port=proxy.port, **kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


# --------------------------------------------------------------------------------- RESP, unit-level

REPLIES = [
    b"+OK\r\n",
    b"-ERR wrong\r\n",
    b":-42\r\n",
    b"$5\r\nhello\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"$7\r\na\r\n*1\r\n\r\n",  # a bulk string holding CRLF and RESP-looking bytes
    b"*-1\r\n",
    b"*0\r\n",
    b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n*0\r\n$-1\r\n",
    b"_\r\n",
    b",3.14\r\n",
    b",-inf\r\n",
    b"#t\r\n",
    b"(3492890328409238509324850943850943825024385\r\n",
    b"!21\r\nSYNTAX invalid syntax\r\n",
    b"=15\r\ntxt:Some string\r\n",
    b"%2\r\n+first\r\n:1\r\n+second\r\n%1\r\n$1\r\nk\r\n~2\r\n:1\r\n:2\r\n",
    b"%0\r\n",
    b"~3\r\n+a\r\n+b\r\n+c\r\n",
    b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n",
    b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
    b"*2\r\n|1\r\n+ttl\r\n:3600\r\n:1\r\n:2\r\n",
    b"$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n",
    b"*?\r\n:1\r\n*?\r\n+x\r\n.\r\n:2\r\n.\r\n",
    b"%?\r\n+a\r\n:1\r\n.\r\n",
]
KINDS = ["+", "-", ":", "$", "$", "$", "$", "*", "*", "*", "_", ",", ",", "#", "(", "!", "=", "%", "%", "~", ">"]
KINDS += ["*", "*", "$", "*", "%"]


def chunks(data: bytes, how: str) -> list[bytes]:
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    rng, out, i = random.Random(7), [], 0
    while i < len(data):
        n = rng.randint(1, 40)
        out.append(data[i : i + n])
        i += n
    return out


@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
def test_reply_scanner_splits_every_resp2_and_resp3_type(how: str) -> None:
    scanner = ReplyScanner()
    got: list[tuple[bytes, str]] = []
    for piece in chunks(b"".join(REPLIES), how):
        got += scanner.feed(piece)
    assert [raw for raw, _ in got] == REPLIES
    assert [kind for _, kind in got] == KINDS
    assert scanner.pending == 0


def test_reply_scanner_large_value_in_small_pieces() -> None:
    value = os.urandom(1 << 20)
    data = b"$%d\r\n%s\r\n+OK\r\n" % (len(value), value)
    scanner = ReplyScanner()
    got = []
    for i in range(0, len(data), 1000):
        got += scanner.feed(data[i : i + 1000])
    assert got == [(data[:-5], "$"), (b"+OK\r\n", "+")]


@pytest.mark.parametrize("bad", [b"?what\r\n", b"$3\r\nabcd\r\n", b":x\r\n", b".\r\n"])
def test_reply_scanner_rejects_what_is_not_resp(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyScanner().feed(bad)


def test_request_parser_multibulk_inline_and_empty() -> None:
    commands = [
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nv\r\nx\r\n",
        b"PING\r\n",
        b"*0\r\n",
        b"\r\n",
        b"set  a   b\n",
        b"*1\r\n$4\r\nPING\r\n",
    ]
    argvs = [[b"SET", b"k", b"v\r\nx"], [b"PING"], [], [], [b"set", b"a", b"b"], [b"PING"]]
    for how in ("whole", "bytes", "random"):
        parser = RequestParser()
        got = []
        for piece in chunks(b"".join(commands), how):
            got += parser.feed(piece)
        assert got == list(zip(argvs, commands, strict=True)), how


def test_command_matcher() -> None:
    load = Command.from_argv([b"script", b"load", INCR_LUA.encode()])
    evalsha = Command.from_argv([b"evalsha", INCR_SHA.encode(), b"1", b"k"])
    eval_ = Command.from_argv([b"EVAL", INCR_LUA.encode(), b"1", b"k"])
    assert command_matcher("SCRIPT LOAD")(load) and not command_matcher("SCRIPT FLUSH")(load)
    assert command_matcher("evalsha")(evalsha) and not command_matcher("EVAL")(evalsha)
    assert command_matcher(None)(load) and command_matcher("*")(evalsha)
    assert command_matcher("EVALSHA", script=INCR_SHA)(evalsha)
    assert command_matcher(script=INCR_LUA)(evalsha) and command_matcher(script=INCR_LUA)(eval_)
    assert not command_matcher(script=ECHO_LUA)(evalsha)
    assert command_matcher("EVALSHA", contains="k")(evalsha) and not command_matcher(contains="zz")(evalsha)
    assert command_matcher(lambda c: c.first == b"load")(load)
    assert command_matcher(("EVAL", "EVALSHA"))(evalsha) and not command_matcher(["GET", "SET"])(evalsha)
    assert evalsha.script_sha == eval_.script_sha == INCR_SHA


# ---------------------------------------------------------------------------------- transparency


def test_plain_commands_pass(proxy: RedisProxy, connect: Connect, direct: redis.Redis) -> None:
    client = connect()
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
    assert client.set("k", "v") is True
    assert client.get("k") == b"v"
    assert client.get("missing") is None
    assert client.incr("n") == 1
    assert client.lrange("nothing", 0, -1) == []
    with pytest.raises(redis.ResponseError):
        client.incr("k")
    assert direct.get("k") == b"v"
    counts = proxy.counts
    assert (counts["SET"], counts["GET"], counts["INCRBY"]) == (1, 2, 2)  # redis-py's incr() is INCRBY
    assert ("SET", "k") in proxy.log and ("INCRBY", "n") in proxy.log
    assert proxy.wait_count("GET", 2, timeout=1)


@pytest.mark.parametrize("transaction", [False, True])
def test_pipeline_of_100_keeps_replies_in_order(proxy: RedisProxy, connect: Connect, transaction: bool) -> None:
    client = connect()
    pipe = client.pipeline(transaction=transaction)
    for i in range(100):
        if i % 4 == 0:
            pipe.set(f"k{i}", i)
        elif i % 4 == 1:
            pipe.incrby(f"k{i}", i)
        elif i % 4 == 2:
            pipe.get(f"k{i}")
        else:
            pipe.lpush(f"k{i}", i)
    results = pipe.execute()
    expected = [[True, i, None, 1][i % 4] for i in range(100)]
    assert results == expected
    assert client.mget([f"k{i}" for i in range(0, 100, 4)]) == [str(i).encode() for i in range(0, 100, 4)]


def test_concurrent_pipelines(proxy: RedisProxy, connect: Connect, direct: redis.Redis) -> None:
    client = connect(max_connections=8)

    def run(_: int) -> None:
        for _ in range(20):
            pipe = client.pipeline(transaction=False)
            for _ in range(25):
                pipe.incr("shared")
            assert len(pipe.execute()) == 25

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert direct.get("shared") == b"4000"


def test_large_values(proxy: RedisProxy, connect: Connect) -> None:
    client = connect(socket_timeout=20)
    one_mb = os.urandom(1 << 20)
    assert client.set("big", one_mb)
    assert client.get("big") == one_mb
    pipe = client.pipeline(transaction=False)
    pipe.set("small", "s").get("big").get("small")
    assert pipe.execute() == [True, one_mb, b"s"]
    huge = os.urandom(12 << 20)  # above the proxy's back-pressure mark
    assert client.set("huge", huge)
    assert client.get("huge") == huge


def test_scripts_pass(proxy: RedisProxy, connect: Connect) -> None:
    client = connect()
    assert client.script_load(INCR_LUA) == INCR_SHA
    assert client.evalsha(INCR_SHA, 1, "n") == 1
    script = client.register_script(ECHO_LUA)
    assert script.sha == sha1_of(ECHO_LUA)
    assert script(args=["hi"]) == b"hi"  # NOSCRIPT, SCRIPT LOAD, EVALSHA: all paired right
    assert client.eval(INCR_LUA, 1, "n") == 2
    assert proxy.counts["EVALSHA"] == 3 and proxy.counts["SCRIPT"] == 2


def test_resp3_types_and_pushes(proxy: RedisProxy, connect: Connect, direct: redis.Redis) -> None:
    client = connect(protocol=3, decode_responses=True)
    client.hset("h", mapping={"a": "1", "b": "2"})
    assert client.hgetall("h") == {"a": "1", "b": "2"}  # map
    client.sadd("s", "x", "y")
    assert client.smembers("s") == {"x", "y"}  # set
    client.zadd("z", {"m": 1.5})
    assert client.zscore("z", "m") == 1.5  # double
    assert client.get("nothing") is None  # RESP3 null
    assert client.eval("redis.setresp(3); return true", 0) is True  # boolean
    assert client.eval("redis.setresp(3); return {double=3.5}", 0) == 3.5
    big = client.eval("redis.setresp(3); return {big_number='123456789012345678901234567890'}", 0)
    assert int(big) == 123456789012345678901234567890
    assert "redis_version" in client.info("server")  # a verbatim string
    # Client-side caching: an invalidation push arrives between two replies, out of band.
    client.client_tracking_on()
    client.set("t", "1")
    assert client.get("t") == "1"
    direct.set("t", "2")
    time.sleep(0.1)
    assert client.get("t") == "2"
    fault = proxy.drop_reply("GET")
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        client.get("t")
    assert fault.hits == 1


@pytest.mark.parametrize("protocol", [2, 3])
def test_pubsub_passes(proxy: RedisProxy, connect: Connect, direct: redis.Redis, protocol: int) -> None:
    pubsub = connect(protocol=protocol).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("ch")
    wait_until(lambda: direct.pubsub_numsub("ch")[0][1] == 1, timeout=5)
    direct.publish("ch", "hello")
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
    assert message is not None and message["data"] == b"hello"
    pubsub.close()


# ------------------------------------------------------------------------------------------ faults


def test_drop_reply_of_a_script_it_ran(proxy: RedisProxy, connect: Connect, direct: redis.Redis) -> None:
    client = connect()
    assert client.script_load(INCR_LUA) == INCR_SHA
    client.script_load(ECHO_LUA)
    fault = proxy.drop_reply("EVALSHA", script=INCR_SHA)
    assert client.evalsha(sha1_of(ECHO_LUA), 0, "x") == b"x"  # another script: not matched
    with pytest.raises(redis.ConnectionError):
        client.evalsha(INCR_SHA, 1, "n")
    assert fault.wait(5) and fault.hits == 1
    assert direct.get("n") == b"1"  # the INCR happened; only its reply was lost
    assert client.evalsha(INCR_SHA, 1, "n") == 2  # count=1: the next one passes (on a new connection)


def test_drop_reply_of_a_registered_script_skips_noscript(
    proxy: RedisProxy, connect: Connect, direct: redis.Redis
) -> None:
    client = connect()
    script = client.register_script(INCR_LUA)  # not loaded: EVALSHA -> NOSCRIPT, SCRIPT LOAD, EVALSHA
    fault = proxy.drop_reply(script=INCR_LUA)
    with pytest.raises(redis.ConnectionError):
        script(keys=["n"])
    assert direct.get("n") == b"1"
    assert fault.hits == 1 and proxy.counts["EVALSHA"] == 2 and proxy.counts["SCRIPT"] == 1


def test_drop_reply_then_hang(proxy: RedisProxy, connect: Connect, direct: redis.Redis) -> None:
    client = connect(socket_timeout=0.5)
    fault = proxy.drop_reply("INCRBY", then="hang")
    with pytest.raises(redis.TimeoutError):
        client.incr("n")
    assert fault.hits == 1 and direct.get("n") == b"1"
    assert client.incr("n") == 2


def test_drop_reply_count_errors_and_transactions(proxy: RedisProxy, connect: Connect, direct: redis.Redis) -> None:
    client = connect()
    direct.set("text", "abc")
    fault = proxy.drop_reply("INCRBY", count=2, skip_errors=True)
    with pytest.raises(redis.ResponseError):
        client.incr("text")  # an error reply: passed, not counted
    pipe = client.pipeline(transaction=True)
    pipe.incr("n").incr("n")
    assert pipe.execute() == [1, 2]  # INCRs inside MULTI are answered +QUEUED: not matched
    for _ in range(2):
        with pytest.raises(redis.ConnectionError):
            client.incr("n")
    assert fault.wait(1) and fault.hits == 2 and direct.get("n") == b"4"
    assert client.incr("n") == 5
    proxy.drop_reply("EXEC")
    pipe = client.pipeline(transaction=True)
    pipe.incr("n")
    with pytest.raises(redis.ConnectionError):
        pipe.execute()
    assert direct.get("n") == b"6"


def test_drop_reply_in_a_pipeline(proxy: RedisProxy, connect: Connect, direct: redis.Redis) -> None:
    client = connect()
    client.script_load(INCR_LUA)
    proxy.drop_reply(script=INCR_SHA)
    pipe = client.pipeline(transaction=False)
    pipe.set("a", 1).evalsha(INCR_SHA, 1, "n").set("b", 2)
    with pytest.raises(redis.ConnectionError):
        pipe.execute()
    assert direct.get("a") == b"1" and direct.get("n") == b"1"
    assert client.get("a") == b"1"


def test_drop_request(proxy: RedisProxy, connect: Connect, direct: redis.Redis) -> None:
    client = connect()
    client.script_load(INCR_LUA)
    fault = proxy.drop_request("EVALSHA", script=INCR_SHA)
    with pytest.raises(redis.ConnectionError):
        client.evalsha(INCR_SHA, 1, "n")
    assert fault.hits == 1 and direct.get("n") is None  # never reached Redis
    assert proxy.counts["EVALSHA"] == 0
    assert client.evalsha(INCR_SHA, 1, "n") == 1
    # In a pipeline: what came before went through, the matching command and what follows did not.
    proxy.drop_request("INCRBY")
    pipe = client.pipeline(transaction=False)
    pipe.set("a", 1).incr("m").set("b", 2)
    with pytest.raises(redis.ConnectionError):
        pipe.execute()
    assert direct.get("a") == b"1" and direct.get("m") is None and direct.get("b") is None


def test_drop_request_then_hang(proxy: RedisProxy, connect: Connect, direct: redis.Redis) -> None:
    client = connect(socket_timeout=0.5)
    proxy.drop_request("INCRBY", then="hang")
    with pytest.raises(redis.TimeoutError):
        client.incr("n")
    assert direct.get("n") is None
    assert client.incr("n") == 1


def test_freeze_and_thaw(proxy: RedisProxy, connect: Connect, direct: redis.Redis) -> None:
    client = connect(socket_timeout=0.5)
    assert client.ping()
    proxy.freeze()
    assert proxy.frozen
    with pytest.raises(redis.TimeoutError):
        client.get("k")
    with pytest.raises(redis.TimeoutError):
        connect(socket_timeout=0.5, socket_connect_timeout=0.5).ping()  # new connections are not served
    proxy.thaw()
    assert client.get("k") is None
    # Held, not lost: a write sent while frozen is delivered on thaw.
    slow = connect(socket_timeout=5)
    slow.ping()
    started = time.monotonic()
    with proxy.freeze(seconds=0.4):
        assert slow.set("k", "v") is True  # answered once the freeze ends by itself
    assert time.monotonic() - started >= 0.35
    assert direct.get("k") == b"v"


def blocked_call(client: redis.Redis, proxy: RedisProxy) -> tuple[threading.Thread, list[BaseException]]:
    """A BLPOP in flight through the proxy (an idle pooled connection that was closed is silently
    replaced by redis-py at checkout: only a command in flight sees a cut)."""
    errors: list[BaseException] = []
    before = proxy.counts["BLPOP"]

    def run() -> None:
        try:
            client.blpop(["queue"], timeout=4)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert proxy.wait_count("BLPOP", before + 1, timeout=5)
    return thread, errors


@pytest.mark.parametrize("reset", [False, True])
def test_cut(proxy: RedisProxy, connect: Connect, reset: bool) -> None:
    idle, busy = connect(), connect(socket_timeout=5)
    assert idle.ping() and busy.ping()
    thread, errors = blocked_call(busy, proxy)
    assert proxy.cut(reset=reset) == 2
    thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], redis.ConnectionError), errors
    accepted = proxy.accepted
    assert idle.ping() and busy.ping()  # new connections are accepted
    assert proxy.accepted == accepted + 2


def test_refuse(proxy: RedisProxy, connect: Connect) -> None:
    open_one = connect()
    assert open_one.ping()
    proxy.refuse(True)
    with pytest.raises(redis.ConnectionError):
        connect().ping()
    assert open_one.ping()  # connections already open are not touched
    assert proxy.refused == 1
    proxy.refuse(False)
    assert connect().ping()


def test_redis_going_away_behind_the_proxy(proxy: RedisProxy, connect: Connect, redis_server: RedisServer) -> None:
    client = connect()
    assert client.ping()
    redis_server.stop()
    with pytest.raises(redis.ConnectionError):  # the proxy closes its side; reconnecting finds no Redis
        client.ping()
    assert proxy.upstream_failures >= 1
    redis_server.start()  # same port
    assert client.ping()


def test_default_redis_py_retries_rerun_a_lost_script(proxy: RedisProxy, direct: redis.Redis) -> None:
    """Why the clients above disable retries: redis-py >= 6 retries a lost reply by default, so a
    script whose reply is lost runs twice, and the caller never knows."""
    client = redis.Redis(host="127.0.0.1", port=proxy.port)
    try:
        client.script_load(INCR_LUA)
        proxy.drop_reply(script=INCR_SHA)
        assert client.evalsha(INCR_SHA, 1, "n") == 2
        assert direct.get("n") == b"2"
    finally:
        client.close()


def test_another_process_through_the_proxy(proxy: RedisProxy, direct: redis.Redis) -> None:
    code = (
        "import sys, redis\n"
        "from redis.backoff import NoBackoff\n"
        "from redis.retry import Retry\n"
        "r = redis.Redis.from_url(sys.argv[1], retry=Retry(NoBackoff(), 0))\n"
        "r.set('a', 1)\n"
        "try:\n"
        "    r.incr('n')\n"
        "except redis.ConnectionError:\n"
        "    print('lost')\n"
        "print(r.incr('n'))\n"
    )
    fault = proxy.drop_reply("INCRBY", contains="n")
    out = subprocess.run([sys.executable, "-c", code, proxy.url], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["lost", "2"]
    assert fault.hits == 1 and direct.get("n") == b"2"


def test_idle_and_frozen_do_not_spin(proxy: RedisProxy, connect: Connect) -> None:
    clients = [connect(socket_timeout=3) for _ in range(4)]
    for client in clients:
        client.ping()
    proxy.drop_request("INCRBY", then="hang")
    with pytest.raises(redis.TimeoutError):
        connect(socket_timeout=0.2).incr("n")
    proxy.freeze()
    held = threading.Thread(target=lambda: clients[0].set("k", "v"))
    held.start()
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    proxy.thaw()
    held.join()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.15, f"{cpu:.2f}s of CPU in 0.5s idle"


def test_close_closes_everything(redis_server: RedisServer) -> None:
    proxy = RedisProxy(redis_server.port).start()
    client = redis.Redis(host="127.0.0.1", port=proxy.port, retry=Retry(NoBackoff(), 0), socket_timeout=2)
    try:
        assert client.ping()
        proxy.close()
        assert proxy.connections == 0 and proxy.errors == []
        with pytest.raises(redis.ConnectionError):
            client.ping()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", proxy.port)) != 0
    finally:
        client.close()
        proxy.close()
