"""Broker faults under a stream of deliveries, through real servers and real worker processes.

(3) Redis stopped: only 503s while it is down, never a 200; afterwards every 200 is processed.
(4) Redis killed (SIGKILL) and restarted with AOF, ``appendfsync always``: nothing that got a 200 is lost.
(6) Redis hung (SIGSTOP): the web side answers 503 well before the sender's 5 s.

No wall-clock assertion anywhere: waits are bounded, latencies are recorded, not asserted.
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.faults.conftest import Load, add_row, wait_processed

SERVERS = [
    pytest.param(("uvicorn", "starlette_app:app"), id="uvicorn"),
    pytest.param(("gunicorn", "flask_app:app"), id="gunicorn"),
]


def _setup(spawn, server: RedisServer, events_file: Path, kind: str, app: str, timeout: str):  # type: ignore[no-untyped-def]
    env = {"WA_BROKER_URL": server.url, "WA_EVENTS": str(events_file), "WA_ENQUEUE_TIMEOUT": timeout}
    proc = spawn.gunicorn(app, threads=8, **env) if kind == "gunicorn" else spawn.uvicorn(app, **env)
    return server, proc, env


def _finish(spawn, load: Load, env: dict[str, str], events_file: Path) -> tuple[set[str], int, int, int]:  # type: ignore[no-untyped-def]
    """Run a worker over everything stored; return (accepted, processed, duplicates, losses)."""
    accepted = load.accepted()
    spawn.worker("hooks:wa", threads=8, **env)
    seen = wait_processed(events_file, accepted)
    duplicates = sum(count - 1 for count in seen.values() if count > 1)
    losses = len(accepted - set(seen))
    return accepted, sum(seen.values()), duplicates, losses


@pytest.mark.parametrize("server_kind", SERVERS)
def test_redis_stopped_during_stream(
    server_kind: tuple[str, str], spawn, aof_redis: RedisServer, events_file: Path
) -> None:  # type: ignore[no-untyped-def]
    kind, app = server_kind
    redis_server, proc, env = _setup(spawn, aof_redis, events_file, kind, app, "0.5")
    load = Load(proc.url + "/webhook", threads=4).start()
    try:
        load.wait_for(200, 40)
        redis_server.stop()  # SIGTERM: Redis exits cleanly; the AOF has every acknowledged write
        down_from = time.monotonic()
        load.wait_for(503, 40)
        down_until = time.monotonic()
        redis_server.start()  # same port, same AOF: recovery with no restart of the web process
        load.wait_for(200, 40, timeout=30)
    finally:
        load.stop()
    while_down = load.between(down_from, down_until)
    assert while_down, "no request fell entirely inside the outage"
    assert {o.status for o in while_down} == {503}  # never a 200 while down
    assert {o.status for o in load.outcomes} <= {200, 503}, load.summary()
    accepted, processed, duplicates, losses = _finish(spawn, load, env, events_file)
    add_row(
        fault="3 redis stopped", server=kind, answered_200=len(accepted), answered_503=load.count(503),
        while_down=len(while_down), processed=processed, duplicates=duplicates, losses=losses,
    )  # fmt: skip
    assert losses == 0


@pytest.mark.parametrize("server_kind", SERVERS)
def test_redis_killed_and_restarted_with_aof(
    server_kind: tuple[str, str], spawn, aof_redis: RedisServer, events_file: Path
) -> None:
    kind, app = server_kind
    redis_server, proc, env = _setup(spawn, aof_redis, events_file, kind, app, "0.5")
    load = Load(proc.url + "/webhook", threads=8).start()
    try:
        for _ in range(2):  # two crashes in the same run
            load.wait_for(200, 100)
            redis_server.stop(signal.SIGKILL)  # a crash mid-load, not a clean shutdown
            redis_server.start()
        load.wait_for(200, 100, timeout=30)
    finally:
        load.stop()
    assert {o.status for o in load.outcomes} <= {200, 503}, load.summary()
    accepted, processed, duplicates, losses = _finish(spawn, load, env, events_file)
    add_row(
        fault="4 redis SIGKILL+restart (AOF always) x2", server=kind, answered_200=len(accepted),
        answered_503=load.count(503), processed=processed, duplicates=duplicates, losses=losses,
    )  # fmt: skip
    assert losses == 0


@pytest.mark.parametrize("server_kind", SERVERS)
def test_hung_redis_answers_503_in_time(
    server_kind: tuple[str, str], spawn, aof_redis: RedisServer, events_file: Path
) -> None:  # type: ignore[no-untyped-def]
    kind, app = server_kind
    # The library's default enqueue_timeout (2 s): the latencies below are those a user gets.
    redis_server, proc, env = _setup(spawn, aof_redis, events_file, kind, app, "2.0")
    assert redis_server.proc is not None
    load = Load(proc.url + "/webhook", threads=8).start()
    try:
        load.wait_for(200, 40)
        redis_server.proc.send_signal(signal.SIGSTOP)
        hung_from = time.monotonic()
        try:
            load.wait_for(503, 16, timeout=30)
            hung_until = time.monotonic()
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        load.wait_for(200, 40, timeout=30)
    finally:
        load.stop()
    while_hung = load.between(hung_from, hung_until)
    assert while_hung and {o.status for o in while_hung} == {503}
    assert {o.status for o in load.outcomes} <= {200, 503}, load.summary()
    latencies = sorted(o.ended - o.started for o in load.outcomes if o.status == 503)
    accepted, processed, duplicates, losses = _finish(spawn, load, env, events_file)
    add_row(
        fault="6 redis SIGSTOP (enqueue_timeout 2s)", server=kind, answered_200=len(accepted),
        answered_503=len(latencies), processed=processed, duplicates=duplicates, losses=losses,
        latency_503_median=f"{statistics.median(latencies):.2f}s", latency_503_max=f"{latencies[-1]:.2f}s",
    )  # fmt: skip
    assert losses == 0
