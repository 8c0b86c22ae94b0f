"""The slowloris family, from one thread on 127.0.0.1, and a legitimate sender beside it.

`Attack` keeps ``count`` connections per family open to one port, bounded in time and in the
connections it opens, and reconnects each one the server closes (an attacker does):

- ``idle``: connect and send nothing;
- ``headers``: a request line, then one byte of an endless header every second;
- ``body``: a complete head carrying a well-formed (but wrong) signature header, so that the
  precheck lets it through, then one body byte every second.

`Sender` posts valid signed deliveries one after another on fresh connections, each given the
sender's 5 s, and records every answer and how long it took.
"""

from __future__ import annotations

import selectors
import socket
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from wa_middleware.testing import text
from wa_middleware.web.auth import HubSignature256

#: The sender's window: a delivery not answered 200 within it is redelivered (and counts as lost here).
SENDER_TIMEOUT = 5.0
SIGNER = HubSignature256("meta-app-secret")  # tests/apps/hooks.py, WA_AUTH=meta
FAMILIES = ("idle", "headers", "body")
BODY_LENGTH = 2048


def _opening(family: str) -> bytes:
    if family == "idle":
        return b""
    if family == "headers":
        return b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    return (
        "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: sha256={'ab' * 32}\r\nContent-Length: {BODY_LENGTH}\r\n\r\n{{"
    ).encode()


@dataclass
class _Conn:
    family: str
    sock: socket.socket
    opened: float
    next_send: float
    received: bytes = b""


@dataclass
class Attack:
    port: int
    counts: dict[str, int]
    #: seconds between two bytes of a trickle
    interval: float = 1.0
    #: connections opened at most in all (a server closing at once must not make a busy loop)
    max_connections: int = 5000
    opened: Counter[str] = field(default_factory=Counter)
    #: per family: (seconds the server held the connection, status of its answer or None)
    closed: dict[str, list[tuple[float, int | None]]] = field(default_factory=dict)
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Attack:
        self._thread = threading.Thread(target=self._run, name="slow-attack", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _connect(self, family: str, selector: selectors.BaseSelector) -> None:
        if sum(self.opened.values()) >= self.max_connections:
            return
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            opening = _opening(family)
            if opening:
                sock.sendall(opening)
            sock.setblocking(False)
        except OSError:
            self.refused += 1
            return
        self.opened[family] += 1
        now = time.monotonic()
        selector.register(sock, selectors.EVENT_READ, _Conn(family, sock, now, now + self.interval))

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            for family, count in self.counts.items():
                for _ in range(count):
                    self._connect(family, selector)
            while not self._stop.is_set():
                now = time.monotonic()
                for key, _ in selector.select(timeout=0.05):
                    conn: _Conn = key.data
                    try:
                        chunk = conn.sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if chunk:
                        conn.received += chunk
                        continue
                    self._closed(conn, selector, now)
                    time.sleep(0.01)
                    self._connect(conn.family, selector)
                for key in list(selector.get_map().values()):
                    conn = key.data
                    if conn.family == "idle" or now < conn.next_send:
                        continue
                    conn.next_send = now + self.interval
                    try:
                        conn.sock.send(b"a" if conn.family == "headers" else b" ")
                    except OSError:
                        pass  # the read side will tell it is closed
        finally:
            for key in list(selector.get_map().values()):
                key.data.sock.close()
            selector.close()

    def _closed(self, conn: _Conn, selector: selectors.BaseSelector, now: float) -> None:
        selector.unregister(conn.sock)
        conn.sock.close()
        data = conn.received
        status = int(data[9:12]) if data.startswith(b"HTTP/1.") and data[9:12].isdigit() else None
        self.closed.setdefault(conn.family, []).append((now - conn.opened, status))

    def summary(self) -> dict[str, object]:
        """Per family: connections opened, closed by the server, their answers and median hold time."""
        out: dict[str, object] = {}
        for family in self.counts:
            closed = self.closed.get(family, [])
            statuses = Counter(str(s) for _, s in closed)
            held = statistics.median(h for h, _ in closed) if closed else None
            out[family] = {
                "opened": self.opened[family],
                "cut": len(closed),
                "answers": dict(statuses),
                "median_hold_s": None if held is None else round(held, 1),
            }
        return out


@dataclass
class Outcome:
    started: float
    seconds: float
    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.seconds <= SENDER_TIMEOUT


@dataclass
class Sender:
    """Valid signed deliveries, one every ``interval`` seconds whatever became of the previous ones
    (as a sender delivers), each on a fresh connection and given the sender's 5 s."""

    url: str
    interval: float = 0.5
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _posts: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Sender:
        self._thread = threading.Thread(target=self._run, name="legit-sender", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Send no more, and wait for the answers still due (each within the sender's 5 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(SENDER_TIMEOUT)
        for post in self._posts:
            post.join(SENDER_TIMEOUT * 3)

    def post(self) -> Outcome:
        body = text("legit").to_bytes()
        headers = {"content-type": "application/json", "x-hub-signature-256": SIGNER.sign(body),
                   "connection": "close"}  # fmt: skip
        started = time.monotonic()
        try:
            with httpx.Client(timeout=SENDER_TIMEOUT) as client:
                status: int | None = client.post(self.url, content=body, headers=headers).status_code
            error = None
        except httpx.HTTPError as exc:
            status, error = None, type(exc).__name__
        outcome = Outcome(started, time.monotonic() - started, status, error)
        with self._lock:
            self.outcomes.append(outcome)
        return outcome

    def _run(self) -> None:
        while not self._stop.is_set():
            post = threading.Thread(target=self.post, name="legit-post", daemon=True)
            post.start()
            self._posts.append(post)
            self._stop.wait(self.interval)

    def summary(self) -> dict[str, object]:
        seconds = [o.seconds for o in self.outcomes]
        return {
            "sent": len(self.outcomes),
            "ok_within_5s": sum(o.ok for o in self.outcomes),
            "answers": dict(Counter(str(o.status if o.status is not None else o.error) for o in self.outcomes)),
            "max_s": round(max(seconds), 2) if seconds else None,
            "median_s": round(statistics.median(seconds), 3) if seconds else None,
        }
