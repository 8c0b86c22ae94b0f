"""Conversations in order, through a real server, real Redis and 4 real worker processes.

20 conversations of 50 messages, each conversation posted in order, all concurrently; callbacks
sleep a random 0-20 ms and log start and end. Every conversation's log must be in posted order,
with no overlap inside a conversation, and every event processed exactly once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.faults.harness import PHONE_ID, analyze, post_conversations, read_log, text_delivery

CONVERSATIONS = 20
MESSAGES = 50


def workload(tag: str) -> tuple[dict[str, list[bytes]], dict[str, list[str]]]:
    bodies: dict[str, list[bytes]] = {}
    expected: dict[str, list[str]] = {}
    for c in range(CONVERSATIONS):
        user = f"4917{c:08d}"
        conv = f"{PHONE_ID}:{user}"
        ids = [f"wamid.{tag}.{c}.{i}" for i in range(MESSAGES)]
        bodies[conv] = [text_delivery(user, f"{c}-{i}", mid) for i, mid in enumerate(ids)]
        expected[conv] = ids
    return bodies, expected


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("plain", id="plain"),
        pytest.param("fail-twice", id="one-callback-fails-twice"),
        pytest.param("sigkill", id="worker-sigkilled-mid-run"),
    ],
)
def test_conversations_in_order(case: str, spawn, redis_url: str, namespace: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "events.jsonl"
    env = {
        "WA_BROKER_URL": redis_url, "WA_NAMESPACE": namespace, "WA_EVENTS": str(log), "WA_ORDERED": "1",
        "WA_SLEEP_MS": "20", "WA_RECOVERY_TIMEOUT": "3", "WA_MIN_BACKOFF": "50", "WA_MAX_BACKOFF": "200",
    }  # fmt: skip
    bodies, expected = workload(case)
    if case == "fail-twice":
        env["WA_FAIL_TWICE"] = "3-10"  # conversation 3, message 10
    server = spawn.uvicorn("worker_app:app", **env)
    workers = [spawn.worker("worker_hooks:wa", processes=1, threads=4, **env) for _ in range(4)]
    killed: set[int] = set()
    if case == "sigkill":
        import threading

        def kill_one() -> None:
            # Once callbacks run, SIGKILL one worker process (the dramatiq child, not the parent).
            wait_until(lambda: len(read_log(log)) > 200, timeout=120)
            pids = {line["pid"] for line in read_log(log)}
            victim = next(iter(pids))
            killed.add(victim)
            os.kill(victim, signal.SIGKILL)

        killer = threading.Thread(target=kill_one)
        killer.start()
    answered = post_conversations(server.url, bodies)
    total = CONVERSATIONS * MESSAGES
    assert answered == total

    def all_done() -> bool:
        ends = {line["id"] for line in read_log(log) if line["cb"] == "on_text" and line["phase"] == "end"}
        return len(ends) >= total

    wait_until(all_done, timeout=240, interval=0.5)
    if case == "sigkill":
        killer.join()
    time.sleep(1)  # anything that would run twice has had time to
    lines = read_log(log)
    outcome = analyze(lines, expected, killed=frozenset(killed))
    if killed:
        finished = {(x["pid"], x["id"]) for x in lines if x["phase"] != "start"}
        cut = [
            x["id"]
            for x in lines
            if x["pid"] in killed and x["phase"] == "start" and (x["pid"], x["id"]) not in finished
        ]
        print("FAULT-ROW", {"row": "ordering, SIGKILL", "cut_short": cut})
    assert outcome.lost == 0
    assert outcome.duplicates == 0, outcome
    assert outcome.overlaps == []
    assert outcome.order_violations == []
    assert outcome.processed == total
    if case == "fail-twice":
        assert outcome.failures == 2
    # The other (ordered too) callback ran once per message.
    any_ends = [line["id"] for line in read_log(log) if line["cb"] == "on_any"]
    assert sorted(any_ends) == sorted(mid for ids in expected.values() for mid in ids)
    assert workers
