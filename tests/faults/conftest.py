"""Fault-injection helpers: a load generator that remembers every answer, and the results table.

Each fault test adds one row (deliveries answered 200, events processed, duplicates, losses, and
what else it measured); the rows are printed at the end of the run and, with
``WA_FAULT_REPORT=path``, written there as JSON lines.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import pytest
import redis

from tests.conftest import PAYLOADS, RedisServer, read_events

AUTH = ("testuser", "testpass")
_TEMPLATE = json.loads((PAYLOADS / "text.json").read_text())
_ROWS: list[dict[str, object]] = []


def delivery(message_id: str) -> bytes:
    """text.json with its own message id, so every delivery can be traced to its event."""
    payload = json.loads(json.dumps(_TEMPLATE))
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = message_id
    return json.dumps(payload).encode()


@dataclass
class Outcome:
    message_id: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer
    error: str | None = None


@dataclass
class Load:
    """``threads`` clients posting distinct deliveries to ``url`` until stopped."""

    url: str
    threads: int = 4
    fresh_connections: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def start(self) -> Load:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def _run(self, n: int) -> None:
        headers = {"connection": "close"} if self.fresh_connections else {}
        count = 0
        with httpx.Client(timeout=10, auth=AUTH, headers=headers) as client:
            while not self._stop.is_set():
                count += 1
                message_id = f"wamid.{self.prefix}.{n}.{count}"
                started = time.monotonic()
                try:
                    status: int | None = client.post(self.url, content=delivery(message_id)).status_code
                    error = None
                except httpx.HTTPError as exc:
                    status, error = None, type(exc).__name__
                    time.sleep(0.01)
                with self._lock:
                    self.outcomes.append(Outcome(message_id, started, time.monotonic(), status, error))

    def count(self, status: int) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if o.status == status)

    def wait_for(self, status: int, n: int, timeout: float = 30) -> None:
        """Bounded wait until at least ``n`` more answers with ``status`` came back."""
        target = self.count(status) + n
        deadline = time.monotonic() + timeout
        while self.count(status) < target:
            if time.monotonic() > deadline:
                pytest.fail(f"fewer than {n} answers {status} within {timeout}s: {self.summary()}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(30)

    def accepted(self) -> set[str]:
        return {o.message_id for o in self.outcomes if o.status == 200}

    def summary(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(str(o.status if o.status is not None else o.error) for o in self.outcomes))

    def between(self, start: float, end: float) -> list[Outcome]:
        """Requests sent and answered entirely inside [start, end]."""
        return [o for o in self.outcomes if o.started >= start and o.ended <= end]


def processed(events_file: Path) -> Counter[str]:
    """How many times each message id reached the ``on_text`` callback."""
    return Counter(e["event"]["id"] for e in read_events(events_file) if e["callback"] == "on_text")


def stored_ids(url: str, namespace: str = "dramatiq", queue: str = "wa_middleware") -> set[str]:
    """Message ids of the deliveries waiting in the queue (decoding the stored dramatiq messages)."""
    client = redis.Redis.from_url(url)
    try:
        ids = set()
        for raw in client.hvals(f"{namespace}:{queue}.msgs"):
            message = msgspec.msgpack.decode(raw)
            body = json.loads(message["args"][0])
            ids.add(body["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
        return ids
    finally:
        client.close()


def wait_processed(events_file: Path, expected: set[str], timeout: float = 90) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        seen = processed(events_file)
        if expected <= set(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with ``appendonly yes`` and ``appendfsync always``, killed at teardown."""
    directory = tmp_path / "redis-aof"
    directory.mkdir()
    server = RedisServer(directory, appendonly=True)
    server.start()
    yield server
    if server.proc is not None:
        server.proc.send_signal(signal.SIGCONT)  # a test that failed while it was paused
    server.stop(signal.SIGKILL)


def add_row(**row: object) -> None:
    _ROWS.append(row)
    path = os.environ.get("WA_FAULT_REPORT")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ROWS:
        return
    terminalreporter.section("fault table")
    for row in _ROWS:
        terminalreporter.write_line("  ".join(f"{k}={v}" for k, v in row.items()))
