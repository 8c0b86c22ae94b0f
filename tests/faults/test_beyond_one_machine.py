"""Beyond one machine: a broker over TLS with an ACL user, and a primary with a replica behind Sentinel
failing over under load, with real redis-server, redis-sentinel, uvicorn and worker processes.

The failover rows measure what the web side answers while the primary is gone (only 200 or 503),
how long until 200s resume, what the worker does meanwhile (it waits and goes on: the epoch marker
came over with the replica, so it does not stop), and what a failover loses: nothing of what the
replica had, every delivery answered 200 that it had not received yet unless ``replicas=1``
made each 200 wait for it. A `Relay` between the primary and its replica makes the replica lag.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import wait_until
from tests.faults.conftest import add_row
from tests.faults.harness import AUTH, post, text_delivery
from tests.jsonlog import read_jsonl
from tests.redis_topology import Sentinels, TLSRedis, certificates
from wa_middleware.keys import KeyLayout

NAMESPACE = "beyond"


def env_for(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"WA_BROKER_URL": url, "WA_NAMESPACE": NAMESPACE, "WA_EVENTS": str(tmp_path / "events.jsonl"), **extra}


def runs(lines: list[dict[str, Any]]) -> Counter[str]:
    return Counter(x["id"] for x in lines if x["cb"] == "on_text" and x["phase"] == "end")


# -- TLS and ACL -------------------------------------------------------------------------------------


def test_tls_and_acl_through_the_web_and_the_worker(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``rediss://user:pass@...?ssl_ca_certs=...``: a uvicorn app answers 200 and a ``wa-middleware
    worker`` runs the callbacks, as an ACL user that may touch only the webhook's namespace (and not
    the dangerous commands but INFO); a wrong password stops the worker at start with one line."""
    certs = certificates(tmp_path / "certs")
    (tmp_path / "tls").mkdir()
    rules = f"~{NAMESPACE}:* +@all -@dangerous +info"
    server = TLSRedis(tmp_path / "tls", certs, {"wa-app": ("p@ss:w/rd", rules)})
    server.start()
    try:
        env = env_for(server.url, tmp_path)
        web = spawn.uvicorn("worker_app:app", **env)
        spawn.worker("worker_hooks:wa", processes=1, threads=2, **env)
        ids = [f"wamid.TLS{i}" for i in range(5)]
        with httpx.Client(timeout=30) as client:
            answers = [post(client, web.url, text_delivery("4915100000031", mid, mid)) for mid in ids]
        assert answers == [200] * 5
        log = Path(env["WA_EVENTS"])
        wait_until(lambda: set(runs(read_jsonl(log))) >= set(ids), timeout=60, interval=0.2)
        time.sleep(1)
        assert [runs(read_jsonl(log))[mid] for mid in ids] == [1] * 5
        # Every key the web side and the worker wrote is under the namespace: the ACL user may write no other.
        assert server.client().exists(KeyLayout(namespace=NAMESPACE).epoch)

        wrong = spawn.worker("worker_hooks:wa", **dict(env, WA_BROKER_URL=server.url_for("wa-app", "wrong")))
        assert wrong.proc is not None
        assert wrong.proc.wait(60) == 2
        output = wrong.log.read_text().strip()
        assert "Traceback" not in output and ":wrong@" not in output
        assert output.splitlines() == [
            f"wa-middleware: error: rediss://wa-app:***@127.0.0.1:{server.port}/0?ssl_ca_certs={certs.ca}: "
            "Redis refused the credentials of the broker URL (invalid username-password pair or user is disabled.)"
        ]
        add_row(row="TLS + ACL user limited to the namespace", answered_200=5, processed=5, duplicates=0, lost=0,
                wrong_password="exit 2, one line")  # fmt: skip
    finally:
        server.stop(signal.SIGKILL)


# -- Sentinel failover -------------------------------------------------------------------------------


@dataclass
class Answer:
    message_id: str
    started: float
    ended: float
    status: int | None
    error: str | None = None


@dataclass
class Posting:
    """``threads`` senders posting distinct deliveries to ``url`` until stopped, each answer kept.

    A sender does not redeliver what got a 503 (each delivery is posted once, so each answer counts
    once); it pauses 50 ms after one, as a sender backs off."""

    url: str
    threads: int = 4
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self, prefix: str) -> Posting:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(prefix, n), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def _run(self, prefix: str, n: int) -> None:
        with httpx.Client(timeout=15, auth=AUTH) as client:
            count = 0
            while not self._stop.is_set():
                count += 1
                mid = f"wamid.{prefix}.{n}.{count}"
                body = text_delivery(f"49151000001{n:02d}", mid, mid)
                started = time.monotonic()
                try:
                    status: int | None = client.post(self.url + "/webhook", content=body).status_code
                    error = None
                except httpx.HTTPError as exc:
                    status, error = None, type(exc).__name__
                with self._lock:
                    self.answers.append(Answer(mid, started, time.monotonic(), status, error))
                if status != 200:
                    time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(30)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def wait_for_200s(self, n: int, after: float = 0.0, timeout: float = 60) -> float:
        """Until ``n`` requests sent after ``after`` got a 200; the time the first of them was sent."""

        def found() -> float | None:
            oks = [a.started for a in self.snapshot() if a.status == 200 and a.started > after]
            return min(oks) if len(oks) >= n else None

        return float(wait_until(found, timeout=timeout, interval=0.02))


def test_failover_with_the_worker_running(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The primary SIGKILLed under load, the replica in sync: every answer meanwhile is a 200 or a 503,
    200s resume once Sentinel promoted the replica, the worker waits the failover out and goes on
    (no exit 70: the epoch marker is on the new primary), and every delivery answered 200 runs once."""
    row = failover(spawn, tmp_path, replicas=0, lag=0.0)
    assert row["other_answers"] == {}
    assert row["lost"] == 0 and row["duplicates"] == 0


def test_failover_loses_what_a_lagging_replica_had_not_received(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The replica 2 s behind (its link held) when the primary dies: the deliveries answered 200 in
    those 2 s are lost with the primary. Asynchronous replication: nothing to do about it but WAIT."""
    row = failover(spawn, tmp_path, replicas=0, lag=2.0)
    assert row["other_answers"] == {}
    assert row["answered_200_during_lag"] > 0
    # Every one answered inside the lag, and at most those whose request straddled its start or end.
    assert row["answered_200_during_lag"] <= row["lost"] <= row["answered_200_around_lag"]
    assert row["duplicates"] == 0


def test_failover_with_replicas_1_loses_nothing(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The same failover with ``Webhook(replicas=1)``: while the replica lags, the web side answers 503
    (its ``WAIT`` times out), so nothing answered 200 is lost. The promoted replica has no replica of
    its own: 503 until one is back (the old primary's machine restarts 3 s after the kill and the
    sentinels make it a replica of the new primary)."""
    row = failover(spawn, tmp_path, replicas=1, lag=2.0, rejoin=3.0)
    assert row["other_answers"] == {}
    # 503s for what was sent while the replica lagged (on a busy machine they may end after the kill).
    assert row["answered_200_during_lag"] == 0 and row["answered_503_sent_during_lag"] > 0
    assert row["lost"] == 0 and row["duplicates"] == 0
    assert row["kill_to_first_200_s"] > 3.0  # not before a replica acknowledged again


def test_failover_with_replicas_1_and_two_replicas_keeps_answering(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``replicas=1`` with two replicas: after the failover the other replica follows the new primary,
    so 200s resume as soon as without ``replicas=``, and nothing answered 200 is lost."""
    row = failover(spawn, tmp_path, replicas=1, lag=0.0, more=1)
    assert row["other_answers"] == {}
    assert row["lost"] == 0 and row["duplicates"] == 0
    assert row["kill_to_first_200_s"] < 10


def failover(  # type: ignore[no-untyped-def]
    spawn, tmp_path: Path, *, replicas: int, lag: float, rejoin: float | None = None, more: int = 0
) -> dict[str, Any]:
    """One failover under load; returns (and adds to the fault table) what was measured.

    Without ``lag`` the worker runs throughout. With it, the worker is stopped first (as when the
    workers are behind: deliveries wait in the queue), the replica's link is held for ``lag``
    seconds, the primary is killed, and a worker starts once 200s are back: what it never runs was
    lost. ``rejoin``: the old primary starts again (empty) that many seconds after the kill. ``more``:
    replicas besides the one that can lag.
    """
    topology = Sentinels(tmp_path / "sentinel", more=more).start()
    try:
        env = env_for(topology.url, tmp_path, WA_REPLICAS=str(replicas), WA_RECOVERY_TIMEOUT="10")
        web = spawn.uvicorn("worker_app:app", **env)
        worker = spawn.worker("worker_hooks:wa", processes=1, threads=4, **env)
        log = Path(env["WA_EVENTS"])
        posting = Posting(web.url).start(prefix=f"F{replicas}{int(lag)}")
        posting.wait_for_200s(50)
        epoch_key = KeyLayout(namespace=NAMESPACE).epoch
        epoch = wait_until(lambda: topology.primary.client().get(epoch_key), timeout=30)
        held_from = around_from = time.monotonic()
        if lag:
            assert worker.stop() == 0
            assert topology.relay is not None
            # In step first (the relay runs in this busy process and can fall behind by itself). A
            # write acknowledged after the WAIT ran but before the freeze may be lost too: the window
            # of what may be lost opens when the WAIT is sent.
            around_from = time.monotonic()
            assert topology.primary.client().wait(1 + more, 10_000) == 1 + more
            held_from = time.monotonic()
            topology.relay.freeze()
            time.sleep(lag)
        old_port = topology.primary.port
        killed = topology.kill_primary()
        if rejoin is not None:
            time.sleep(max(killed + rejoin - time.monotonic(), 0))
            # Not before the failover: a primary back (empty) before the sentinels gave up on it stays
            # primary, which is another fault (the one the epoch marker is for), not this test's.
            topology.agreed_master_port(other_than=old_port)
            topology.primary.start()  # the crashed machine back, empty: the sentinels make it a replica
        resumed = posting.wait_for_200s(20, after=killed, timeout=90)
        if lag:
            worker = spawn.worker("worker_hooks:wa", processes=1, threads=4, **env)
        time.sleep(2)
        posting.stop()
        answers = posting.snapshot()
        new_port = topology.agreed_master_port(other_than=old_port)
        promoted = [r for r in topology.replicas if r.port == new_port]
        assert new_port != old_port and len(promoted) == 1
        assert promoted[0].client().get(epoch_key) == epoch  # the marker came over: no "lost its data"

        accepted = {a.message_id for a in answers if a.status == 200}
        wait_until(lambda: accepted <= set(runs(read_jsonl(log))) or _settled(log), timeout=120, interval=0.5)
        time.sleep(1.5)  # anything that would run twice has the time to
        ran = runs(read_jsonl(log))
        assert worker.proc is not None and worker.proc.poll() is None  # still running: it did not halt
        during = Counter(a.status for a in answers if killed <= a.started and a.ended <= resumed)
        others = Counter(str(a.status or a.error) for a in answers if a.status not in (200, 503))
        inside = [a for a in answers if held_from <= a.started and a.ended <= killed] if lag else []
        around = [a for a in answers if around_from <= a.ended and a.started <= killed] if lag else []
        row = {
            "row": f"Sentinel failover, primary SIGKILLed{f', replica {lag:g} s behind' if lag else ''}"
            f"{f', {1 + more} replicas' if more else ''}{', replicas=1' if replicas else ''}"
            f"{f', old primary back after {rejoin:g} s' if rejoin else ''}",
            "answered_200": len(accepted),
            "answered_503": sum(1 for a in answers if a.status == 503),
            "processed": sum(1 for mid in accepted if ran[mid]),
            "duplicates": sum(ran[mid] - 1 for mid in accepted if ran[mid] > 1),
            "lost": sum(1 for mid in accepted if not ran[mid]),
            "answered_200_during_lag": sum(1 for a in inside if a.status == 200),
            "answered_200_around_lag": sum(1 for a in around if a.status == 200),
            "answered_503_during_lag": sum(1 for a in inside if a.status == 503),
            "answered_503_sent_during_lag": sum(
                1 for a in answers if lag and held_from <= a.started <= killed and a.status == 503
            ),
            "answers_during_failover": dict(sorted((str(k), v) for k, v in during.items())),
            "kill_to_first_200_s": round(resumed - killed, 2),
            "other_answers": dict(others),
            "processed_beyond_200": sum(1 for mid in ran if mid not in accepted),
        }
        add_row(**row)
        return row
    finally:
        topology.stop()


def _settled(log: Path) -> bool:
    """No callback ran for the last 5 s: what was never run is not going to run (the lost ones)."""
    lines = read_jsonl(log)
    return bool(lines) and time.time() - max(x["t"] for x in lines) > 5
