"""After the 200: Redis faults and paused workers, with real redis-server, uvicorn and worker processes.

Each test is one row of the worker fault table (``add_row``): a fault injected for real (a clean
restart from the AOF, a reply dropped by the proxy between the worker and Redis, SIGSTOP of a
worker, an evicting memory policy, a full Redis, a Redis that lost its data, a lagging replica),
then what ran: every event answered 200 runs its callback to its end exactly once, in order for an
ordered conversation, unless the row says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import APPS, RedisServer, wait_until
from tests.faults.conftest import add_row
from tests.faults.harness import DeathWatch, overlaps, post, text_delivery
from tests.faults.proxy import RedisProxy, sha1_of
from tests.jsonlog import read_jsonl
from wa_middleware.worker import scripts

USER = "4915100000002"


def ends(lines: list[dict[str, Any]], mid: str) -> int:
    return sum(1 for x in lines if x["cb"] == "on_text" and x["id"] == mid and x["phase"] == "end")


def order_of(lines: list[dict[str, Any]], ids: list[str]) -> list[str]:
    return [x["id"] for x in lines if x["cb"] == "on_text" and x["phase"] == "end" and x["id"] in ids]


@pytest.fixture
def aof(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "aof", appendonly=True)
    server.dir.mkdir()
    server.start()
    yield server
    if server.proc is not None:
        server.proc.send_signal(signal.SIGCONT)
    server.stop(signal.SIGKILL)


def env_for(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "WA_BROKER_URL": url, "WA_NAMESPACE": "after200", "WA_EVENTS": str(tmp_path / "events.jsonl"),
        "WA_RECOVERY_TIMEOUT": "2", "WA_MIN_BACKOFF": "100", "WA_MAX_BACKOFF": "400", "WA_MAX_RETRIES": "3",
        **extra,
    }  # fmt: skip


def post_all(url: str, ids: list[str], user: str = USER) -> int:
    with httpx.Client(timeout=30) as client:
        return sum(post(client, url, text_delivery(user, mid, mid)) == 200 for mid in ids)


def restart(server: RedisServer, down: float = 0.0) -> None:
    """A clean restart: SIGTERM (Redis writes its AOF out), ``down`` seconds away, then up on the same port."""
    server.stop(signal.SIGTERM)
    time.sleep(down)
    server.start()


def settle(log: Path, ids: list[str], timeout: float = 60) -> list[dict[str, Any]]:
    wait_until(lambda: all(ends(read_jsonl(log), mid) for mid in ids), timeout=timeout, interval=0.2)
    time.sleep(1.0)  # anything that would run twice has the time to
    return read_jsonl(log)


def row(name: str, answered: int, ids: list[str], lines: list[dict[str, Any]], **extra: object) -> dict[str, Any]:
    counts = [ends(lines, mid) for mid in ids]
    result = {
        "row": name, "answered_200": answered, "processed": sum(1 for c in counts if c),
        "duplicates": sum(c - 1 for c in counts if c > 1), "lost": counts.count(0), **extra,
    }  # fmt: skip
    add_row(**result)
    return result


def test_clean_restart_while_a_delivery_finishes(spawn, aof: RedisServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 1: Redis restarts (AOF, nothing lost) while an ordered unit that fails once finishes: its
    FINISH (with its retry) waits for Redis and lands; the conversation goes on, in order, once each.

    recovery_timeout 8 s: the outage (~3 s) stays below the watchdog's 6.4 s (0.8 x 8), which would
    kill a worker cut off from Redis longer than that with an ordered callback in flight (the row
    `test_redis_outage_mid_ordered_callback_kills_the_worker`)."""
    env = env_for(aof.url, tmp_path, WA_ORDERED="1", WA_SLOW="wamid.RS0", WA_SLOW_S="2", WA_FAIL_TWICE="wamid.RS0",
                  WA_RECOVERY_TIMEOUT="8")  # fmt: skip
    server = spawn.uvicorn("worker_app:app", **env)
    spawn.worker("worker_hooks:wa", processes=1, threads=2, **env)
    log = Path(env["WA_EVENTS"])
    ids = [f"wamid.RS{i}" for i in range(5)]
    answered = post_all(server.url, ids[:1])
    wait_until(lambda: [x for x in read_jsonl(log) if x["id"] == "wamid.RS0" and x["phase"] == "start"], 60)
    restart(aof, down=2.5)  # the first try ends (fails) while Redis is down: its FINISH must wait
    answered += post_all(server.url, ids[1:])
    lines = settle(log, ids, timeout=90)
    result = row("clean restart during FINISH (ordered, fails twice)", answered, ids, lines)
    assert (result["answered_200"], result["processed"], result["duplicates"], result["lost"]) == (5, 5, 0, 0)
    assert order_of(lines, ids) == ids
    fails = [x for x in lines if x["id"] == "wamid.RS0" and x["phase"] == "fail"]
    assert len(fails) == 2  # two failed tries, then the third ended: the retries were scheduled


def test_lost_reply_to_plan(spawn, redis_server: RedisServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 2: the reply to the script that took deliveries off the queue is lost: the deliveries are
    in the worker's acks without its knowing; reconciling requeues them and they run, once each."""
    with RedisProxy(redis_server.port) as proxy:
        env = env_for(redis_server.url, tmp_path)
        server = spawn.uvicorn("worker_app:app", **env)
        fault = proxy.drop_reply(script=scripts.load("plan"), count=1, skip_errors=True)
        spawn.worker("worker_hooks:wa", processes=1, threads=2, **dict(env, WA_BROKER_URL=proxy.url))
        log = Path(env["WA_EVENTS"])
        ids = [f"wamid.LP{i}" for i in range(5)]
        answered = post_all(server.url, ids)
        assert fault.wait(30)
        started = time.monotonic()
        lines = settle(log, ids, timeout=60)
        result = row("lost reply to PLAN", answered, ids, lines, recovered_s=round(time.monotonic() - started, 1))
        assert (result["processed"], result["duplicates"], result["lost"]) == (5, 0, 0)
        answered = post_all(server.url, ids)  # redeliveries: skipped as duplicates
        time.sleep(2)
        assert (answered, [ends(read_jsonl(log), mid) for mid in ids]) == (5, [1] * 5)


def test_lost_reply_to_finish_that_hands_over_a_lane(spawn, redis_server: RedisServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 2: the reply to a FINISH that handed the next lane head to this worker is lost: FINISH is
    retried (and found applied), the head it took is requeued by reconciling, the conversation goes on."""
    with RedisProxy(redis_server.port) as proxy:
        env = env_for(redis_server.url, tmp_path, WA_ORDERED="1", WA_SLOW="wamid.LF0", WA_SLOW_S="1")
        server = spawn.uvicorn("worker_app:app", **env)
        spawn.worker("worker_hooks:wa", processes=1, threads=2, **dict(env, WA_BROKER_URL=proxy.url))
        log = Path(env["WA_EVENTS"])
        ids = [f"wamid.LF{i}" for i in range(4)]
        answered = post_all(server.url, ids)  # LF1..3 wait in the lane behind the slow LF0
        wait_until(lambda: [x for x in read_jsonl(log) if x["id"] == "wamid.LF0" and x["phase"] == "start"], 60)
        fault = proxy.drop_reply(script=scripts.load("finish"), count=1, skip_errors=True)
        assert fault.wait(30)
        lines = settle(log, ids, timeout=60)
        result = row("lost reply to FINISH handing over a lane head", answered, ids, lines)
        assert (result["processed"], result["duplicates"], result["lost"]) == (4, 0, 0)
        assert order_of(lines, ids) == ids


def test_retry_in_backoff_survives_a_reconnect(spawn, aof: RedisServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 3: a retry waiting out its backoff when the worker's connection is lost (Redis restarted)
    still runs: it waits in Redis (the retries set), never in the worker's memory."""
    env = env_for(aof.url, tmp_path, WA_FAIL_TWICE="wamid.RB0", WA_MIN_BACKOFF="3000", WA_MAX_BACKOFF="3000")
    server = spawn.uvicorn("worker_app:app", **env)
    spawn.worker("worker_hooks:wa", processes=1, threads=2, **env)
    log = Path(env["WA_EVENTS"])
    answered = post_all(server.url, ["wamid.RB0"])
    wait_until(lambda: [x for x in read_jsonl(log) if x["id"] == "wamid.RB0" and x["phase"] == "fail"], 60)
    restart(aof, down=1.0)  # within the first 3 s backoff
    lines = settle(log, ["wamid.RB0"], timeout=60)
    result = row("retry in backoff across a Redis restart", answered, ["wamid.RB0"], lines)
    assert (result["processed"], result["duplicates"], result["lost"]) == (1, 0, 0)


def stalled_mid_ordered_callback(  # type: ignore[no-untyped-def]
    spawn,
    tmp_path: Path,
    redis_url: str,
    ids: list[str],
    stall: Callable[[int], None],
    *,
    worker_url: str | None = None,
    **extra: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One worker process stalls (``stall(pid)``) in the middle of the ordered callback of ``ids[0]``,
    the rest of its conversation held behind it; a survivor starts. The watchdog must SIGKILL the
    stalled process before its lease can be taken over: no two runs of the conversation overlap, and
    the survivor runs everything, once each, in order. Returns the log and the measured figures."""
    env = env_for(redis_url, tmp_path, WA_ORDERED="1", **extra)
    server = spawn.uvicorn("worker_app:app", **env)
    stalled = spawn.worker(
        "worker_hooks:wa", processes=1, threads=2, **dict(env, WA_BROKER_URL=worker_url or redis_url)
    )
    log = Path(env["WA_EVENTS"])
    answered = post_all(server.url, ids)
    first = wait_until(lambda: [x for x in read_jsonl(log) if x["id"] == ids[0] and x["phase"] == "start"], 60)
    pid = first[0]["pid"]
    death = DeathWatch(pid)
    stalled_at = time.time()
    stall(pid)
    spawn.worker("worker_hooks:wa", processes=1, threads=2, **env)  # the survivor
    died = death.wait(10)
    assert died is not None, "the stalled worker process was not killed"
    lines = settle(log, ids, timeout=60)
    assert stalled.proc is not None
    code = stalled.proc.wait(30)  # dramatiq's main process, once its one worker process died
    output = stalled.log.read_text()
    rerun = min(x["t"] for x in lines if x["id"] == ids[0] and x["phase"] == "start" and x["pid"] != pid)
    figures = {
        "stall_to_kill_s": round(died - stalled_at, 2), "kill_to_rerun_s": round(rerun - died, 2),
        "worker_exit": code, "cut_short": 1,
    }  # fmt: skip
    # Killed by its watchdog, which said so on the command's stderr; the command then exits 1 (dramatiq's
    # RET_KILLED: its main process stops the others and exits when one worker process dies). Its own
    # "exited unexpectedly (code -9)" line is not asserted: its log thread may stop before writing it.
    assert f"wa-middleware watchdog: worker {pid} held an ordered callback without a heartbeat" in output
    assert code == 1
    # Before the lease could be taken over: within KILL_AT x recovery_timeout (1.6 s) of the last
    # heartbeat's send, which came at most recovery_timeout / 6 before the stall (and a watchdog STEP).
    assert died - stalled_at < 2.0, figures
    assert overlaps(lines, {pid: died}) == []
    stalled_starts = [x["id"] for x in lines if x["phase"] == "start" and x["pid"] == pid]
    survivor_ends = [x["id"] for x in lines if x["phase"] == "end" and x["cb"] == "on_text" and x["pid"] != pid]
    assert stalled_starts == [ids[0]]  # it was cut short in the one callback it was in
    assert survivor_ends == ids  # all of them on the survivor, once each, in order
    return lines, row_of(answered, ids, lines, figures)


def row_of(answered: int, ids: list[str], lines: list[dict[str, Any]], figures: dict[str, Any]) -> dict[str, Any]:
    counts = [ends(lines, mid) for mid in ids]
    return {"answered_200": answered, "processed": sum(1 for c in counts if c),
            "duplicates": sum(c - 1 for c in counts if c > 1), "lost": counts.count(0), **figures}  # fmt: skip


def test_paused_worker_is_killed_by_its_watchdog(spawn, redis_server: RedisServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 4: a worker SIGSTOPped (and left stopped 7 s, past recovery_timeout 2 s) in the middle of
    an ordered callback, the rest of its conversation held: its watchdog kills it before its lease can
    be taken over; the survivor runs the conversation, in order, never beside the stopped run."""
    ids = [f"wamid.PZ{i}" for i in range(6)]
    paused: list[int] = []

    def stop(pid: int) -> None:
        paused.append(pid)
        os.kill(pid, signal.SIGSTOP)

    try:
        _, result = stalled_mid_ordered_callback(
            spawn, tmp_path, redis_server.url, ids, stop, WA_SLOW="wamid.PZ0", WA_SLOW_S="1.5"
        )
    finally:
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    add_row(row="worker SIGSTOPped mid ordered callback (recovery_timeout 2 s)", **result)
    assert (result["processed"], result["duplicates"], result["lost"]) == (6, 0, 0)


def test_callback_holding_the_gil_is_killed_by_its_watchdog(spawn, redis_server: RedisServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 4: an ordered callback holds the GIL for 6 s (a C call that never releases it): no thread of
    its process heartbeats meanwhile, the watchdog (another process) kills it; the survivor reruns it."""
    ids = [f"wamid.GL{i}" for i in range(4)]
    _, result = stalled_mid_ordered_callback(
        spawn, tmp_path, redis_server.url, ids, lambda pid: None, WA_HOLD_GIL="wamid.GL0", WA_HOLD_GIL_S="6"
    )
    add_row(row="ordered callback holding the GIL 6 s (recovery_timeout 2 s)", **result)
    assert (result["processed"], result["duplicates"], result["lost"]) == (4, 0, 0)


def test_worker_cut_off_from_redis_is_killed_by_its_watchdog(spawn, redis_server: RedisServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 4: the worker's connections to Redis freeze (the proxy holds every byte) while it runs a 4 s
    ordered callback that needs no Redis: without the kill it would end 2 s into its rerun elsewhere."""
    ids = [f"wamid.CO{i}" for i in range(4)]
    with RedisProxy(redis_server.port) as proxy:
        try:
            _, result = stalled_mid_ordered_callback(
                spawn, tmp_path, redis_server.url, ids, lambda pid: proxy.freeze(),
                worker_url=proxy.url, WA_SLOW="wamid.CO0", WA_SLOW_S="4",
            )  # fmt: skip
        finally:
            proxy.thaw()
    add_row(row="worker cut off from Redis mid ordered callback (recovery_timeout 2 s)", **result)
    assert (result["processed"], result["duplicates"], result["lost"]) == (4, 0, 0)


def test_redis_outage_mid_ordered_callback_kills_the_worker(spawn, aof: RedisServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 4, the price: Redis restarted (down 2.5 s, longer than 0.8 x recovery_timeout 2 s) while an
    ordered callback runs. The worker cannot tell an outage from being cut off alone, so its watchdog
    kills it; a worker that had nothing in flight reruns the unit once Redis is back."""
    ids = [f"wamid.RO{i}" for i in range(4)]
    _, result = stalled_mid_ordered_callback(
        spawn, tmp_path, aof.url, ids, lambda pid: restart(aof, down=2.5), WA_SLOW="wamid.RO0", WA_SLOW_S="4"
    )
    add_row(row="Redis down 2.5 s mid ordered callback (recovery_timeout 2 s)", **result)
    assert (result["processed"], result["duplicates"], result["lost"]) == (4, 0, 0)


def test_evicting_memory_policy_is_refused(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 5: a Redis that may evict keys: the endpoint answers 503 (nothing counts as stored), health
    says so, and the worker refuses to start with the setting and its fix."""
    server_dir = tmp_path / "lru"
    server_dir.mkdir()
    lru = RedisServer(server_dir, extra=("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"))
    lru.start()
    try:
        env = env_for(lru.url, tmp_path)
        server = spawn.uvicorn("worker_app:app", **env)
        with httpx.Client(timeout=30) as client:
            answer = client.post(server.url + "/webhook", content=text_delivery(USER, "x", "wamid.EV0"),
                                 auth=("testuser", "testpass"))  # fmt: skip
        assert answer.status_code == 503 and "retry-after" in answer.headers
        done = subprocess.run(
            [sys.executable, "-m", "wa_middleware.cli", "worker", "worker_hooks:wa", "-p", "1", "-t", "1"],
            env=dict(os.environ, **env, PYTHONPATH=str(APPS)), cwd=APPS, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        assert "maxmemory-policy allkeys-lru" in done.stderr and "noeviction" in done.stderr
        assert "Traceback" not in done.stderr
        add_row(row="maxmemory-policy allkeys-lru", answered_503=1, worker_exit=done.returncode)
    finally:
        lru.stop(signal.SIGKILL)


def test_full_redis_with_noeviction_still_drains(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 5: noeviction and a full Redis: the endpoint answers 503 once full, the workers still take
    and finish what was stored (their scripts may run out of memory), which frees it: then 200 again."""
    server_dir = tmp_path / "full"
    server_dir.mkdir()
    full = RedisServer(server_dir, extra=("--maxmemory", "3mb", "--maxmemory-policy", "noeviction"))
    full.start()
    try:
        env = env_for(full.url, tmp_path)
        server = spawn.uvicorn("worker_app:app", **env)
        log = Path(env["WA_EVENTS"])
        accepted: list[str] = []
        refused = 0
        pad = "x" * 8000
        with httpx.Client(timeout=30) as client:
            for i in range(2000):
                mid = f"wamid.FULL{i}"
                answer = client.post(server.url + "/webhook", content=text_delivery(USER, pad, mid),
                                     auth=("testuser", "testpass"))  # fmt: skip
                if answer.status_code == 200:
                    accepted.append(mid)
                else:
                    assert answer.status_code == 503
                    refused += 1
                    if refused >= 5:
                        break
        assert refused >= 5 and accepted, "Redis never filled up"
        spawn.worker("worker_hooks:wa", processes=1, threads=4, **env)
        lines = settle(log, accepted, timeout=120)
        with httpx.Client(timeout=30) as client:
            after = client.post(server.url + "/webhook", content=text_delivery(USER, "small", "wamid.FULLX"),
                                auth=("testuser", "testpass")).status_code  # fmt: skip
        result = row("full Redis, noeviction", len(accepted), accepted, lines, answered_503=refused, after_drain=after)
        assert (result["duplicates"], result["lost"], after) == (0, 0, 200)
    finally:
        full.stop(signal.SIGKILL)


def test_redis_that_lost_its_data_stops_the_workers(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 6: Redis restarts without persistence (its data, the once-per-event records with it, are
    gone): the workers stop with a clear error instead of running redelivered events again."""
    server_dir = tmp_path / "volatile"
    server_dir.mkdir()
    volatile = RedisServer(server_dir)  # no AOF
    volatile.start()
    try:
        env = env_for(volatile.url, tmp_path)
        server = spawn.uvicorn("worker_app:app", **env)
        worker = spawn.worker("worker_hooks:wa", processes=1, threads=2, **env)
        log = Path(env["WA_EVENTS"])
        ids = [f"wamid.DL{i}" for i in range(5)]
        answered = post_all(server.url, ids)
        settle(log, ids)
        restart(volatile)  # everything gone
        assert worker.proc is not None
        code = worker.proc.wait(30)
        answered += post_all(server.url, ids)  # the sender redelivers: stored, not run again
        time.sleep(2)
        lines = read_jsonl(log)
        output = worker.log.read_text()
        result = row("Redis restarted without its data", answered, ids, lines, worker_exit=code)
        assert code == 70 and "Redis lost its data" in output
        assert result["duplicates"] == 0
    finally:
        volatile.stop(signal.SIGKILL)


def test_wait_for_a_replica_before_the_200(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Item 6: with ``replicas=1`` a delivery is answered 200 only once a replica has it; a replica
    that stops answering turns the answers into 503 (the sender redelivers), never a 200 it lacks."""
    primary_dir, replica_dir = tmp_path / "primary", tmp_path / "replica"
    primary_dir.mkdir()
    replica_dir.mkdir()
    primary = RedisServer(primary_dir, appendonly=True)
    primary.start()
    replica = RedisServer(replica_dir, extra=("--replicaof", "127.0.0.1", str(primary.port)))
    replica.start()
    try:
        client = replica.client()
        wait_until(lambda: client.info("replication").get("master_link_status") == "up", timeout=30)
        env = env_for(primary.url, tmp_path, WA_REPLICAS="1")
        server = spawn.uvicorn("worker_app:app", **env)
        with httpx.Client(timeout=30) as http:

            def one(mid: str) -> tuple[int, float]:
                started = time.perf_counter()
                status = http.post(server.url + "/webhook", content=text_delivery(USER, "r", mid),
                                   auth=("testuser", "testpass")).status_code  # fmt: skip
                return status, time.perf_counter() - started

            healthy = [one(f"wamid.WR{i}") for i in range(20)]
            assert replica.proc is not None
            replica.proc.send_signal(signal.SIGSTOP)
            try:
                lagging = [one(f"wamid.WL{i}") for i in range(3)]
            finally:
                replica.proc.send_signal(signal.SIGCONT)
        assert [s for s, _ in healthy] == [200] * 20
        assert [s for s, _ in lagging] == [503] * 3
        assert max(t for _, t in lagging) < 2.5  # within enqueue_timeout (2 s) and the server's own time
        stored = {k.decode() for k in client.hkeys("after200:wa_middleware.msgs")}
        assert len(stored) >= 20  # every 200 is on the replica
        add_row(row="replicas=1, replica paused", answered_200=20, answered_503=3,
                p50_ms_healthy=round(sorted(t for _, t in healthy)[10] * 1000, 1))  # fmt: skip
    finally:
        if replica.proc is not None:
            replica.proc.send_signal(signal.SIGCONT)
        replica.stop(signal.SIGKILL)
        primary.stop(signal.SIGKILL)


def test_base_exception_in_an_ordered_callback_releases_its_lane(  # type: ignore[no-untyped-def]
    spawn, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Item 7: an ordered callback raising a BaseException (dramatiq itself rejects the message): the
    delivery goes to the dead letters, its lane is released, the later deliveries run; replaying the
    dead letter runs it."""
    env = env_for(redis_server.url, tmp_path, WA_ORDERED="1", WA_BASE_EXCEPTION="wamid.BE1")
    log = Path(env["WA_EVENTS"])
    Path(str(log) + ".broken").touch()
    server = spawn.uvicorn("worker_app:app", **env)
    spawn.worker("worker_hooks:wa", processes=1, threads=2, **env)
    ids = [f"wamid.BE{i}" for i in range(4)]
    answered = post_all(server.url, ids)
    lines = settle(log, [ids[0], *ids[2:]], timeout=60)
    assert order_of(lines, ids) == [ids[0], *ids[2:]]
    Path(str(log) + ".broken").unlink()
    cli = [sys.executable, "-m", "wa_middleware.cli", "dead-letters", "worker_hooks:wa"]
    full_env = dict(os.environ, **env, PYTHONPATH=str(APPS))
    listed = subprocess.run([*cli, "list"], env=full_env, cwd=APPS, capture_output=True, text=True, timeout=60)
    assert "1 dead letter(s)" in listed.stdout, listed.stdout + listed.stderr
    replayed = subprocess.run([*cli, "replay", "--all"], env=full_env, cwd=APPS, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    assert "replayed 1" in replayed.stdout, replayed.stdout + replayed.stderr
    lines = settle(log, ids, timeout=60)
    result = row("BaseException in an ordered callback, then replay", answered, ids, lines)
    assert (result["processed"], result["duplicates"], result["lost"]) == (4, 0, 0)


def test_the_scripts_the_proxy_targets_are_the_loaded_ones() -> None:
    """The fault rows above aim at scripts by their sha: the worker loads them with flags on Redis 7."""
    assert sha1_of(scripts.load("plan")) == sha1_of(scripts.PLAN)
    assert sha1_of(scripts.load("finish", flags=False)) != sha1_of(scripts.FINISH)


def test_workers_whose_clocks_disagree_do_not_presume_each_other_dead(  # type: ignore[no-untyped-def]
    spawn, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Item 4: two workers 6 s apart on the clock (recovery_timeout 2 s), both busy with slow ordered
    callbacks: heartbeats are on Redis's clock, so neither takes the other's work, nothing runs twice."""
    env = env_for(redis_server.url, tmp_path, WA_ORDERED="1", WA_SLEEP_MS="300")
    server = spawn.uvicorn("worker_app:app", **env)
    spawn.worker("worker_hooks:wa", processes=1, threads=2, **dict(env, WA_CLOCK_SKEW="6"))
    spawn.worker("worker_hooks:wa", processes=1, threads=2, **dict(env, WA_CLOCK_SKEW="-6"))
    log = Path(env["WA_EVENTS"])
    ids = [f"wamid.CK{i}" for i in range(24)]
    answered = sum(post_all(server.url, ids[i::4], user=f"49151000001{i}") for i in range(4))
    lines = settle(log, ids, timeout=90)
    time.sleep(3)  # > recovery_timeout: a wrong presumption of death would rerun something by now
    lines = read_jsonl(log)
    result = row("two workers with clocks 12 s apart", answered, ids, lines,
                 pids=len({x["pid"] for x in lines}))  # fmt: skip
    assert (result["processed"], result["duplicates"], result["lost"]) == (24, 0, 0)
    output = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert "presumed dead" not in output
