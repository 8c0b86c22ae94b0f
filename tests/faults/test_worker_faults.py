"""Worker faults with real processes: uvicorn, dramatiq worker processes, real Redis.

Each row posts deliveries through a real server, injects a fault, waits for the callbacks, and
counts: deliveries answered 200, events processed, duplicates (a callback completed twice for one
event) and losses (an event answered 200 whose callback never completed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import APPS, wait_until
from tests.faults.harness import post, text_delivery
from tests.jsonlog import read_jsonl

USER = "4915100000001"


def ends(lines: list[dict[str, Any]], cb: str, mid: str) -> int:
    return sum(1 for line in lines if line["cb"] == cb and line["id"] == mid and line["phase"] == "end")


def starts(lines: list[dict[str, Any]], cb: str, mid: str) -> int:
    return sum(1 for line in lines if line["cb"] == cb and line["id"] == mid and line["phase"] == "start")


def report(row: str, answered: int, ids: list[str], lines: list[dict[str, Any]], **extra: object) -> dict[str, Any]:
    counts = [ends(lines, "on_text", mid) for mid in ids]
    result = {
        "row": row,
        "answered_200": answered,
        "processed": sum(1 for c in counts if c >= 1),
        "duplicates": sum(c - 1 for c in counts if c > 1),
        "lost": sum(1 for c in counts if c == 0),
        **extra,
    }
    print("FAULT-ROW", json.dumps(result))
    return result


def dead_letters(env: dict[str, str], *args: str) -> str:
    full_env = dict(os.environ, **env, PYTHONPATH=str(APPS))
    out = subprocess.run(
        [sys.executable, "-m", "wa_middleware.cli", "dead-letters", "worker_hooks:wa", *args],
        env=full_env, cwd=APPS, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout


@pytest.fixture
def env(redis_url: str, namespace: str, tmp_path: Path) -> dict[str, str]:
    return {
        "WA_BROKER_URL": redis_url, "WA_NAMESPACE": namespace, "WA_EVENTS": str(tmp_path / "events.jsonl"),
        "WA_RECOVERY_TIMEOUT": "2", "WA_MIN_BACKOFF": "100", "WA_MAX_BACKOFF": "400", "WA_MAX_RETRIES": "3",
    }  # fmt: skip


def test_same_delivery_five_times(spawn, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Row 1: the same delivery posted 5 times, sequentially and concurrently: callbacks run once."""
    server = spawn.uvicorn("worker_app:app", **env)
    spawn.worker("worker_hooks:wa", processes=2, threads=4, **env)
    log = Path(env["WA_EVENTS"])
    seq = text_delivery(USER, "sequential", "wamid.DUP.SEQ")
    conc = text_delivery(USER, "concurrent", "wamid.DUP.CONC")
    with httpx.Client(timeout=30) as client:
        answered = sum(post(client, server.url, seq) == 200 for _ in range(5))
    with ThreadPoolExecutor(5) as pool:

        def one(_: int) -> int:
            with httpx.Client(timeout=30) as client:
                return post(client, server.url, conc)

        answered += sum(status == 200 for status in pool.map(one, range(5)))
    ids = ["wamid.DUP.SEQ", "wamid.DUP.CONC"]
    wait_until(lambda: all(ends(read_jsonl(log), "on_text", mid) for mid in ids), timeout=60)
    time.sleep(2)  # room for a duplicate to show up
    lines = read_jsonl(log)
    row = report("same delivery x5", answered, ids, lines)
    assert row == {"row": "same delivery x5", "answered_200": 10, "processed": 2, "duplicates": 0, "lost": 0}
    assert [ends(lines, "on_any", mid) for mid in ids] == [1, 1]


def test_sigkill_mid_callback_then_restart(spawn, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Row 2: kill -9 of the worker in the middle of a slow callback: processed exactly once after restart."""
    env = dict(env, WA_SLOW="wamid.SLOW")
    server = spawn.uvicorn("worker_app:app", **env)
    log = Path(env["WA_EVENTS"])
    ids = ["wamid.SLOW", "wamid.AFTER1", "wamid.AFTER2"]
    with httpx.Client(timeout=30) as client:
        answered = sum(post(client, server.url, text_delivery(USER, mid, mid)) == 200 for mid in ids)
    spawn.worker("worker_hooks:wa", processes=1, threads=1, **env)
    first = wait_until(lambda: [x for x in read_jsonl(log) if x["id"] == "wamid.SLOW" and x["phase"] == "start"], 60)
    os.kill(first[0]["pid"], signal.SIGKILL)  # the dramatiq child running the callback
    killed_at = time.monotonic()
    spawn.worker("worker_hooks:wa", processes=1, threads=2, **env)  # the restart
    wait_until(lambda: all(ends(read_jsonl(log), "on_text", mid) for mid in ids), timeout=90)
    recovered_after = time.monotonic() - killed_at
    time.sleep(1)
    lines = read_jsonl(log)
    row = report("kill -9 mid callback", answered, ids, lines, recovered_s=round(recovered_after, 1))
    assert {k: row[k] for k in ("answered_200", "processed", "duplicates", "lost")} == {
        "answered_200": 3, "processed": 3, "duplicates": 0, "lost": 0,
    }  # fmt: skip
    assert starts(lines, "on_text", "wamid.SLOW") == 2  # cut short once, then run to its end once


def test_killed_worker_work_resumes_on_a_live_worker(spawn, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """A killed worker's message runs again on another, already running, idle worker (no restart,
    quiet queue): the heartbeat/maintenance thread bounds the wait by the recovery timeout."""
    env = dict(env, WA_SLOW="wamid.SLOW2")
    server = spawn.uvicorn("worker_app:app", **env)
    log = Path(env["WA_EVENTS"])
    spawn.worker("worker_hooks:wa", processes=1, threads=1, **env)
    with httpx.Client(timeout=30) as client:
        answered = int(post(client, server.url, text_delivery(USER, "slow", "wamid.SLOW2")) == 200)
    first = wait_until(lambda: [x for x in read_jsonl(log) if x["phase"] == "start"], 60)
    spawn.worker("worker_hooks:wa", processes=1, threads=1, **env)  # the survivor, idle
    time.sleep(1)
    os.kill(first[0]["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: ends(read_jsonl(log), "on_text", "wamid.SLOW2"), timeout=60)
    row = report("kill -9, survivor takes over", answered, ["wamid.SLOW2"], read_jsonl(log),
                 recovered_s=round(time.monotonic() - killed_at, 1))  # fmt: skip
    assert (row["processed"], row["duplicates"], row["lost"]) == (1, 0, 0)


def test_sigterm_finishes_current_work(spawn, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Graceful shutdown: SIGTERM while a slow callback runs: it finishes, the rest is requeued, nothing lost."""
    env = dict(env, WA_SLOW="wamid.TERM0")
    server = spawn.uvicorn("worker_app:app", **env)
    log = Path(env["WA_EVENTS"])
    ids = [f"wamid.TERM{i}" for i in range(10)]
    with httpx.Client(timeout=30) as client:
        answered = sum(post(client, server.url, text_delivery(USER, mid, mid)) == 200 for mid in ids)
    worker = spawn.worker("worker_hooks:wa", processes=1, threads=1, **env)
    wait_until(lambda: starts(read_jsonl(log), "on_text", "wamid.TERM0"), 60)
    assert worker.stop(signal.SIGTERM, timeout=60) == 0
    assert ends(read_jsonl(log), "on_text", "wamid.TERM0") == 1  # finished before the process exited
    spawn.worker("worker_hooks:wa", processes=1, threads=2, **env)
    wait_until(lambda: all(ends(read_jsonl(log), "on_text", mid) for mid in ids), timeout=60)
    time.sleep(1)
    row = report("SIGTERM mid callback", answered, ids, read_jsonl(log))
    assert (row["answered_200"], row["processed"], row["duplicates"], row["lost"]) == (10, 10, 0, 0)


def test_failing_callbacks_retry_alone_and_dead_letter(spawn, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Row 5: a callback failing twice then succeeding runs 3 times, the others once; one that always
    fails ends in the dead letters, and replaying it (after the fix) runs it."""
    log = Path(env["WA_EVENTS"])
    env = dict(env, WA_FAIL_TWICE="wamid.FLAKY", WA_FAIL_ALWAYS="wamid.BROKEN", WA_MAX_RETRIES="2")
    (log.parent / (log.name + ".broken")).write_text("")
    server = spawn.uvicorn("worker_app:app", **env)
    spawn.worker("worker_hooks:wa", processes=1, threads=2, **env)
    ids = ["wamid.FLAKY", "wamid.BROKEN"]
    with httpx.Client(timeout=30) as client:
        answered = sum(post(client, server.url, text_delivery(USER, mid, mid)) == 200 for mid in ids)
    wait_until(lambda: ends(read_jsonl(log), "on_text", "wamid.FLAKY"), timeout=60)
    wait_until(lambda: "1 dead letter(s)" in dead_letters(env, "list"), timeout=60)
    lines = read_jsonl(log)
    assert starts(lines, "on_text", "wamid.FLAKY") == 3
    assert starts(lines, "on_text", "wamid.BROKEN") == 3  # first try + max_retries=2
    assert [ends(lines, "on_any", mid) for mid in ids] == [1, 1]  # the other callback: once each
    listing = dead_letters(env, "list")
    assert "on_text on message m:wamid.BROKEN" in listing and "RuntimeError" in listing
    letter_id = listing.split()[0]
    shown = dead_letters(env, "show", letter_id)
    assert "always failing on purpose" in shown and "tries: 3" in shown
    (log.parent / (log.name + ".broken")).unlink()  # the bug fix
    assert "replayed 1 dead letter(s)" in dead_letters(env, "replay", "--all")
    wait_until(lambda: ends(read_jsonl(log), "on_text", "wamid.BROKEN"), timeout=60)
    assert "0 dead letter(s)" in dead_letters(env, "list")
    # A redelivery of the replayed event does not run it again.
    with httpx.Client(timeout=30) as client:
        answered += int(post(client, server.url, text_delivery(USER, "wamid.BROKEN", "wamid.BROKEN")) == 200)
    time.sleep(2)
    lines = read_jsonl(log)
    row = report("fails twice / always fails + replay", answered, ids, lines,
                 flaky_tries=starts(lines, "on_text", "wamid.FLAKY"))  # fmt: skip
    assert (row["answered_200"], row["processed"], row["duplicates"], row["lost"]) == (3, 2, 0, 0)
    assert "purged 0 dead letter(s)" in dead_letters(env, "purge", "--all")


def test_stale_status_skipped(spawn, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Optional: a ``delivered`` stored after ``read`` of the same message is skipped, and counted."""
    from tests.faults.harness import status_delivery

    env = dict(env, WA_SKIP_STALE="1")
    server = spawn.uvicorn("worker_app:app", **env)
    log = Path(env["WA_EVENTS"])
    with httpx.Client(timeout=30) as client:
        for status in ("sent", "read", "delivered"):
            assert post(client, server.url, status_delivery(USER, "wamid.OUT.STALE", status)) == 200
    spawn.worker("worker_hooks:wa", processes=1, threads=2, **env)
    wait_until(lambda: [x for x in read_jsonl(log) if x.get("status") == "read"], timeout=60)
    time.sleep(1.5)
    seen = [x["status"] for x in read_jsonl(log) if x["cb"] == "on_status"]
    assert sorted(seen) == ["read", "sent"]
    client = redis.Redis.from_url(env["WA_BROKER_URL"])
    try:
        assert int(client.hget(f"{env['WA_NAMESPACE']}:wa:stats", "stale_statuses") or 0) == 1
    finally:
        client.close()
