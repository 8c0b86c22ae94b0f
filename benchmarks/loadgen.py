"""An open-loop HTTP/1.1 load generator with HdrHistogram latency recording.

Open loop: request ``k`` is *scheduled* at ``start + k / rate`` whatever happened before it,
and its latency is measured from that scheduled time, not from when it was actually written.
A server that stalls therefore cannot hide the queue it builds up (no coordinated omission):
requests that find every connection busy wait in a backlog, and that wait is part of their
latency, as it would be for a real sender.

Each generator process drives its share of the schedule over a fixed set of keep-alive
connections using bare `asyncio.Protocol` objects (no HTTP client library: parsing a
response is a few ``bytes.find`` calls, which keeps the generator cheaper than the servers it
measures). Several processes can split one rate when a single one cannot keep up; their
histograms are merged. Every run also records how late the generator itself fired its
sends (``send_lag``): when that grows, the figures measure the generator, not the server.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any, cast

from hdrh.histogram import HdrHistogram

__all__ = ["LoadGenerator", "LoadResult", "LoadSpec", "new_histogram"]

#: Latencies are recorded in microseconds, from 1 us to 60 s, 3 significant digits.
_LOWEST, _HIGHEST, _DIGITS = 1, 60_000_000, 3
_SLO_SLOW_US = 1_000_000


def new_histogram() -> HdrHistogram:
    """A latency histogram in microseconds."""
    return HdrHistogram(_LOWEST, _HIGHEST, _DIGITS)


@dataclass(frozen=True)
class LoadSpec:
    """One fixed-rate run against one server.

    :param rate: requests per second, all generator processes together.
    :param duration: seconds measured, after ``warmup`` seconds sent but not recorded.
    :param connections: keep-alive connections, all processes together.
    :param bodies: request bodies, sent in this order, cycled.
    :param drain_timeout: seconds to wait for outstanding answers after the last send; what
        is still missing then counts as an error (timeout).
    """

    host: str
    port: int
    path: str
    rate: float
    duration: float
    bodies: tuple[bytes, ...]
    headers: tuple[tuple[str, str], ...] = ()
    warmup: float = 0.5
    connections: int = 32
    drain_timeout: float = 5.0


@dataclass
class LoadResult:
    """Merged outcome of one run; latencies in microseconds."""

    rate: float
    duration: float
    histogram: HdrHistogram
    service: HdrHistogram
    send_lag: HdrHistogram
    sent: int = 0
    completed: int = 0
    ok: int = 0
    non_200: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    slow: int = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def non_200_count(self) -> int:
        return sum(self.non_200.values())

    def percentile_ms(self, p: float) -> float:
        if self.histogram.get_total_count() == 0:
            return float("nan")
        return float(self.histogram.get_value_at_percentile(p)) / 1000.0

    def summary(self) -> dict[str, Any]:
        """Plain figures for results.json."""
        h = self.histogram
        empty = h.get_total_count() == 0
        measured = self.completed + self.error_count
        return {
            "rate": self.rate,
            "duration_s": self.duration,
            "sent": self.sent,
            "completed": self.completed,
            "achieved_rps": round(self.completed / self.duration, 1) if self.duration else 0.0,
            "ok": self.ok,
            "non_200": self.non_200_count,
            "non_200_by_status": {str(k): v for k, v in sorted(self.non_200.items())},
            "errors": self.error_count,
            "errors_by_kind": dict(sorted(self.errors.items())),
            "p50_ms": self.percentile_ms(50),
            "p90_ms": self.percentile_ms(90),
            "p99_ms": self.percentile_ms(99),
            "p99_9_ms": self.percentile_ms(99.9),
            "max_ms": float("nan") if empty else h.get_max_value() / 1000.0,
            "mean_ms": float("nan") if empty else h.get_mean_value() / 1000.0,
            "service_p50_ms": _pct(self.service, 50),
            "service_p99_ms": _pct(self.service, 99),
            "send_lag_p99_ms": _pct(self.send_lag, 99),
            "send_lag_max_ms": float("nan")
            if self.send_lag.get_total_count() == 0
            else self.send_lag.get_max_value() / 1000.0,
            # Errors never got an answer: for the sender they are as bad as a slow answer.
            "over_1s_fraction": (self.slow + self.error_count) / measured if measured else 1.0,
            "percentile_curve": _curve(h),
            "histogram": h.encode().decode("ascii"),
        }


def _pct(h: HdrHistogram, p: float) -> float:
    return float("nan") if h.get_total_count() == 0 else h.get_value_at_percentile(p) / 1000.0


def _curve(h: HdrHistogram) -> list[list[float]]:
    """(percentile, ms) points for the latency-by-percentile plot, log-spaced toward the tail."""
    if h.get_total_count() == 0:
        return []
    points = [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0]
    return [[p, h.get_value_at_percentile(p) / 1000.0] for p in points]


# -- one generator process ------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight (no pipelining)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.scheduled = 0.0
        self.sent_at = 0.0
        self.busy = False
        self.need = -1
        self.chunked = False
        self.status = 0
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def send(self, request: bytes, scheduled: float) -> None:
        self.busy = True
        self.scheduled = scheduled
        self.sent_at = time.monotonic()
        self.need = -1
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            try:
                self.status = int(head[9:12])
            except ValueError:
                self.status = 0
            self.close_after = b"\r\nconnection: close" in head
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                self.need = end + 4 + int(head[i + 17 : j if j >= 0 else len(head)])
                self.chunked = False
            else:
                self.chunked = b"\r\ntransfer-encoding: chunked" in head
                self.need = end + 4
                if not self.chunked:
                    self.close_after = True  # a body delimited by the close: never reuse the connection
        if self.chunked:
            if buf.find(b"0\r\n\r\n", self.need) < 0:
                return
        elif len(buf) < self.need:
            return
        buf.clear()
        self.busy = False
        self.run.completed_on(self, self.status, self.scheduled, self.sent_at)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.run.failed_on(self, "connection_lost", self.scheduled)
        else:
            self.run.dropped(self)


class _Run:
    def __init__(self, args: dict[str, Any]) -> None:
        self.host: str = args["host"]
        self.port: int = args["port"]
        self.requests: list[bytes] = args["requests"]
        self.rate: float = args["rate"]
        self.share: int = args["share"]
        self.shares: int = args["shares"]
        self.start: float = args["start"]
        self.measure_from: float = self.start + args["warmup"]
        self.measure_to: float = self.measure_from + args["duration"]
        self.connections: int = args["connections"]
        self.drain_timeout: float = args["drain_timeout"]
        self.hist = new_histogram()
        self.service = new_histogram()
        self.lag = new_histogram()
        self.idle: list[_Conn] = []
        self.backlog: collections.deque[tuple[float, int]] = collections.deque()
        self.outstanding = 0
        self.sent = self.completed = self.ok = self.slow = 0
        self.non_200: collections.Counter[int] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.live = 0
        self.connecting = 0
        self.stopping = False
        self.done = asyncio.Event()
        self.schedule_done = False

    # connection management: connections open on demand, up to the limit, as a client pool
    # does. Pre-opening them all would park idle connections on servers that give each
    # connection a whole worker (gunicorn sync), and measure that instead of the app.
    def _grow(self) -> None:
        if self.backlog and not self.stopping and self.live + self.connecting < self.connections:
            self.connecting += 1
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError:
            self.connecting -= 1
            if self.backlog:
                sched, _ = self.backlog.popleft()
                self._fail("connect", sched)
            await asyncio.sleep(0.01)
            self._grow()
            return
        self.connecting -= 1
        self.live += 1
        self._idle(conn)

    def _idle(self, conn: _Conn) -> None:
        if self.backlog and not self.stopping:
            sched, index = self.backlog.popleft()
            conn.send(self.requests[index], sched)
        else:
            self.idle.append(conn)

    def dispatch(self, sched: float, index: int) -> None:
        self.sent += 1
        self.outstanding += 1
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.send(self.requests[index], sched)
                return
        self.backlog.append((sched, index))
        self._grow()

    # outcomes
    def _settle(self) -> None:
        self.outstanding -= 1
        if self.schedule_done and self.outstanding == 0:
            self.done.set()

    def completed_on(self, conn: _Conn, status: int, sched: float, sent_at: float) -> None:
        now = time.monotonic()
        if self.measure_from <= sched < self.measure_to:
            self.completed += 1
            latency = now - sched
            self.hist.record_value(max(1, min(_HIGHEST, int(latency * 1e6))))
            self.service.record_value(max(1, min(_HIGHEST, int((now - sent_at) * 1e6))))
            if latency * 1e6 > _SLO_SLOW_US:
                self.slow += 1
            if status == 200:
                self.ok += 1
            else:
                self.non_200[status] += 1
        self._settle()
        if conn.close_after:
            assert conn.transport is not None
            conn.transport.close()  # connection_lost() follows and opens a replacement if needed
        else:
            self._idle(conn)

    def _fail(self, kind: str, sched: float) -> None:
        if self.measure_from <= sched < self.measure_to:
            self.errors[kind] += 1
        self._settle()

    def failed_on(self, conn: _Conn, kind: str, sched: float) -> None:
        self.live -= 1
        self._fail(kind, sched)
        self._grow()

    def dropped(self, conn: _Conn) -> None:
        self.live -= 1
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        self._grow()

    async def run(self) -> dict[str, Any]:
        end = self.measure_to
        step = self.shares / self.rate
        sched = self.start + self.share / self.rate
        k = self.share
        n_requests = len(self.requests)
        while sched < end:
            now = time.monotonic()
            if sched > now:
                await asyncio.sleep(sched - now)
                continue
            self.lag.record_value(max(1, min(_HIGHEST, int((now - sched) * 1e6))))
            while sched <= now and sched < end:
                self.dispatch(sched, k % n_requests)
                k += self.shares
                sched += step
        self.schedule_done = True
        if self.outstanding:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self.done.wait(), self.drain_timeout)
        self.stopping = True
        # Whatever has not been answered by now is a timeout, wherever it waited.
        for sched_time, _ in self.backlog:
            if self.measure_from <= sched_time < self.measure_to:
                self.errors["timeout"] += 1
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        return {
            "hist": self.hist.encode(),
            "service": self.service.encode(),
            "lag": self.lag.encode(),
            "sent": self.sent,
            "completed": self.completed,
            "ok": self.ok,
            "slow": self.slow,
            "non_200": dict(self.non_200),
            "errors": dict(self.errors),
            "in_flight_timeouts": self.outstanding - len(self.backlog),
        }


def _run_share(args: dict[str, Any]) -> dict[str, Any]:
    """Entry point of a generator process: drive one share of the schedule."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the bench extra, but the generator works without
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    result: dict[str, Any] = runner(_Run(args).run())
    # Requests still in flight at the deadline: we cannot tell which window they belong to
    # cheaply, so count them all (they are few, and only a failing run has any).
    if result["in_flight_timeouts"] > 0:
        result["errors"]["timeout"] = result["errors"].get("timeout", 0) + result["in_flight_timeouts"]
    return result


def build_requests(spec: LoadSpec) -> list[bytes]:
    """Serialize every request once, up front, so sending is a single ``write``."""
    head = [f"POST {spec.path} HTTP/1.1", f"Host: {spec.host}:{spec.port}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in spec.headers]
    prefix = "\r\n".join(head)
    return [f"{prefix}\r\nContent-Length: {len(b)}\r\n\r\n".encode("latin-1") + b for b in spec.bodies]


class LoadGenerator:
    """A pool of generator processes, kept alive across runs (spawning costs ~0.3 s each).

    :param processes: how many processes share each run's schedule and connections.
    """

    def __init__(self, processes: int = 1) -> None:
        self.processes = max(1, processes)
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.processes, mp_context=multiprocessing.get_context("spawn")
        )
        # Start the processes now, so the first run does not pay for it.
        list(self._pool.map(_noop, range(self.processes)))

    def run(self, spec: LoadSpec) -> LoadResult:
        """Drive one fixed-rate run; blocks for ``warmup + duration`` seconds plus the drain."""
        requests = build_requests(spec)
        shares = self.processes
        start = time.monotonic() + 0.05
        per_conn = max(1, spec.connections // shares)
        jobs = [
            {
                "host": spec.host,
                "port": spec.port,
                "requests": requests,
                "rate": spec.rate,
                "share": i,
                "shares": shares,
                "start": start,
                "warmup": spec.warmup,
                "duration": spec.duration,
                "connections": per_conn,
                "drain_timeout": spec.drain_timeout,
            }
            for i in range(shares)
        ]
        parts = list(self._pool.map(_run_share, jobs))
        result = LoadResult(
            spec.rate, spec.duration, histogram=new_histogram(), service=new_histogram(), send_lag=new_histogram()
        )
        for part in parts:
            result.histogram.decode_and_add(part["hist"])
            result.service.decode_and_add(part["service"])
            result.send_lag.decode_and_add(part["lag"])
            result.sent += part["sent"]
            result.completed += part["completed"]
            result.ok += part["ok"]
            result.slow += part["slow"]
            for status, n in part["non_200"].items():
                result.non_200[int(status)] = result.non_200.get(int(status), 0) + n
            for kind, n in part["errors"].items():
                result.errors[kind] = result.errors.get(kind, 0) + n
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _noop(_: int) -> None:
    return None
