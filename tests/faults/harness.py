"""Deliveries, posting and log analysis shared by the worker fault and ordering tests."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from wa_middleware import testing

AUTH = ("testuser", "testpass")
PHONE_ID = "100000000000001"
#: The events' own time: now (one value for the session, so a body built twice is the same
#: delivery), so their once-per-event records are the done-marks of recent events.
STAMP = str(int(time.time()))


def text_delivery(user: str, body: str, message_id: str) -> bytes:
    return testing.text(
        body, sender=user, name="Test", id=message_id, timestamp=STAMP, phone_number_id=PHONE_ID
    ).to_bytes()


def status_delivery(user: str, message_id: str, status: str) -> bytes:
    return testing.status(
        status, message_id=message_id, recipient=user, timestamp=STAMP, pricing=False, phone_number_id=PHONE_ID
    ).to_bytes()


def post(client: httpx.Client, url: str, body: bytes) -> int:
    for _ in range(5):  # a 503 is the sender's cue to redeliver: do as the sender does
        status = client.post(url + "/webhook", content=body, auth=AUTH).status_code
        if status != 503:
            return status
    return status


def post_conversations(url: str, conversations: dict[str, list[bytes]]) -> int:
    """Post every conversation's deliveries in order (each after the previous got its answer),
    all conversations concurrently; return how many were answered 200."""

    def run(bodies: list[bytes]) -> int:
        with httpx.Client(timeout=30) as client:
            return sum(post(client, url, body) == 200 for body in bodies)

    with ThreadPoolExecutor(len(conversations)) as pool:
        return sum(pool.map(run, conversations.values()))


@dataclass
class Outcome:
    """What the callbacks' log says: counted per (callback, message id)."""

    processed: int = 0
    duplicates: int = 0
    #: Of the duplicates: events that had run to their end on a process SIGKILLed before its work
    #: item (a delivery, or a batch of them under load) was recorded.
    reruns_after_kill: int = 0
    lost: int = 0
    failures: int = 0
    order_violations: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)


def analyze(
    lines: list[dict[str, Any]],
    expected: dict[str, list[str]],
    callback: str = "on_text",
    killed: frozenset[int] = frozenset(),
) -> Outcome:
    """Check ``callback``'s log against ``expected`` (conversation -> message ids in posted order)."""
    out = Outcome()
    ends = Counter(line["id"] for line in lines if line["cb"] == callback and line["phase"] == "end")
    out.failures = sum(1 for line in lines if line["cb"] == callback and line["phase"] == "fail")
    wanted = {mid for ids in expected.values() for mid in ids}
    out.processed = sum(1 for mid in wanted if ends[mid] >= 1)
    out.duplicates = sum(ends[mid] - 1 for mid in wanted if ends[mid] > 1)
    # Ran to its end on a process that was then SIGKILLed before its work item was recorded: the
    # rerun is the documented at-least-once window of a kill (that process's unfinished work items).
    killed_ends = {
        line["id"] for line in lines if line["cb"] == callback and line["phase"] == "end" and line["pid"] in killed
    }
    out.reruns_after_kill = sum(ends[mid] - 1 for mid in wanted if ends[mid] > 1 and mid in killed_ends)
    out.lost = sum(1 for mid in wanted if ends[mid] == 0)
    by_conv: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        if line["cb"] == callback and "conv" in line:
            by_conv[line["conv"]].append(line)
    for conv, ids in expected.items():
        entries = by_conv.get(conv, [])
        # Lines are appended in time order (O_APPEND): starts and ends must alternate, same id.
        running: str | None = None
        for entry in entries:
            if entry["phase"] == "start":
                if running is not None:
                    out.overlaps.append(f"{conv}: {entry['id']} started while {running} ran")
                # A callback cut short by SIGKILL never logs its end: it does not run any more.
                running = None if entry["pid"] in killed else entry["id"]
            else:
                running = None
        completed = [e["id"] for e in entries if e["phase"] == "end"]
        first_seen = list(dict.fromkeys(completed))
        if first_seen != [mid for mid in ids if mid in set(first_seen)]:
            out.order_violations.append(conv)
    return out


def overlaps(lines: list[dict[str, Any]], deaths: dict[int, float], callback: str = "on_text") -> list[str]:
    """Runs of ``callback`` in one conversation that overlap in time (wall clock, one machine).

    A run lasts from its ``start`` line to its ``end`` or ``fail`` line in the same process. A run with
    neither ends when its process died (``deaths``: pid -> time of death, as observed), or never if
    its process did not die (it may still be running)."""
    runs: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    open_runs: dict[tuple[int, str], dict[str, Any]] = {}
    for line in lines:
        if line["cb"] != callback or "conv" not in line:
            continue
        run = (line["pid"], line["id"])
        if line["phase"] == "start":
            open_runs[run] = line
        elif run in open_runs:
            start = open_runs.pop(run)
            runs[start["conv"]].append((start["t"], line["t"], f"{line['id']}@{line['pid']}"))
    for (pid, mid), start in open_runs.items():
        runs[start["conv"]].append((start["t"], deaths.get(pid, float("inf")), f"{mid}@{pid} (cut short)"))
    found = []
    for conv, spans in runs.items():
        spans.sort()
        latest, last = -float("inf"), ""  # the run that ends last among those started so far
        for start, end, name in spans:
            if start < latest:
                found.append(f"{conv}: {name} started {latest - start:.3f} s before {last} ended")
            if end > latest:
                latest, last = end, name
    return found


class DeathWatch:
    """Notes when a process (not a child of ours: a dramatiq worker process) dies: a zombie or gone,
    polled every 5 ms, so the time noted is at most that late (a cautious end for `overlaps`)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.died: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                state = "gone"
            if state in ("Z", "X", "gone"):
                self.died = time.time()
                return
            time.sleep(0.005)

    def wait(self, timeout: float) -> float | None:
        self._thread.join(timeout)
        return self.died
