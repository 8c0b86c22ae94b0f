"""``python -m benchmarks``: run every contender side by side and write the results.

One run, one machine, the same server settings for all: a private Redis is started (AOF,
``appendfsync always`` by default), every contender is started as a real server process on
its own port, and then, one contender at a time, the open-loop generator looks for the
highest rate it sustains (p99 under 50 ms, no error, no non-200) and measures it at fixed
rates. The worker-side figures, the crash comparison, the single-event drain beside stock dramatiq
and the seed's load end to end (the soak) follow. Everything lands in
``benchmarks/results/<timestamp>/``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

from . import crash, report, workers
from .contenders import CONTENDERS, Contender, by_name
from .loadgen import LoadGenerator, LoadResult, LoadSpec
from .payloads import auth_header, make_deliveries, signature_header
from .servers import RedisServer, ServerProcess, WorkerProcess, free_port, process_cpu_seconds, project_root

__all__ = ["Plan", "main", "run"]

#: The sustainable-throughput criterion of the issue: p99 under 50 ms.
P99_LIMIT_MS = 50.0
NAMESPACE = "wabench"


@dataclass(frozen=True)
class Plan:
    """How long and how hard each part runs; ``--quick`` and the full run are two of these."""

    mode: str
    contenders: tuple[str, ...]
    fixed_rates: tuple[float, ...] = (200.0, 500.0, 1000.0)
    fixed_duration: float = 3.0
    fixed_warmup: float = 0.75
    search: bool = True
    search_start: float = 400.0
    search_factor: float = 1.6
    search_refine: int = 2
    search_cap: float = 32_000.0
    search_duration: float = 2.0
    search_warmup: float = 0.5
    drain_timeout: float = 1.5
    #: Seconds of rest after a failing step, so a saturated server drains before the next one.
    cooldown: float = 0.5
    connections: int = 32
    worker_messages: int = 4000
    lag_rate: float = 200.0
    lag_duration: float = 3.0
    crash_deliveries: int = 300
    crash_rate: float = 150.0
    crash_contenders: tuple[str, ...] = ("wa-starlette", "pywa-async", "pywa-sync")
    worker: bool = True
    crash: bool = True
    loadgen_processes: int = 1
    bodies: int = 2000
    #: Redis ``appendfsync`` of the private server: ``always`` is what makes a 200 mean "on disk".
    appendfsync: str = "always"
    #: Contenders whose max is searched in this plan (all of them unless narrowed).
    search_only: tuple[str, ...] | None = None
    #: Interleaved server CPU per request (`run_cpu_rounds`): rounds, req/s, seconds per burst.
    cpu_rounds: int = 8
    cpu_rate: float = 300.0
    cpu_burst: float = 1.5
    #: Interleaved capacity (`run_capacity_rounds`): rounds, seconds measured per burst, warm-up.
    capacity_rounds: int = 5
    capacity_burst: float = 3.0
    capacity_warmup: float = 0.5
    #: What ordering costs (`run_ordering`): interleaved rounds of unordered and ordered drains.
    ordering_rounds: int = 5
    ordering_events: int = 10_000
    #: The worker's drain of single-event deliveries beside stock dramatiq's no-op actor (`run_drain`).
    drain_messages: int = 30_000
    #: The seed's load end to end (`run_soak`): 3,300 deliveries/s for this many minutes (0: none).
    soak_minutes: float = 10.0
    soak_rate: float = 0.0
    soak_connections: int = 128
    #: In-process CPU per request (`request_cpu`): requests per round, rounds (the best counts).
    request_cpu: bool = True
    request_cpu_requests: int = 2000
    request_cpu_rounds: int = 7


def full_plan() -> Plan:
    return Plan(mode="full", contenders=tuple(c.name for c in CONTENDERS))


#: What the quick run searches: each floor and the wa-middleware contender served the same way.
_QUICK_SEARCH = ("ceiling", "floor", "wa-starlette", "floor-wsgi-sync", "wa-flask-sync", "floor-wsgi-gthread",
                 "wa-flask-gthread")  # fmt: skip


def quick_plan() -> Plan:
    """About a minute on 2 cores: one short fixed rate for everyone, a coarse search for each floor
    and the wa-middleware contender served like it, small worker and crash runs."""
    return Plan(
        mode="quick",
        contenders=tuple(c.name for c in CONTENDERS),
        fixed_rates=(200.0,),
        fixed_duration=0.75,
        fixed_warmup=0.2,
        cooldown=0.3,
        search_start=1000.0,
        search_factor=2.0,
        search_refine=0,
        search_cap=8000.0,
        search_duration=0.75,
        search_warmup=0.25,
        drain_timeout=1.0,
        worker_messages=1000,
        lag_rate=200.0,
        lag_duration=1.0,
        crash_deliveries=100,
        crash_rate=200.0,
        crash_contenders=("wa-starlette", "pywa-async"),
        bodies=600,
        search_only=_QUICK_SEARCH,
        request_cpu_requests=300,
        request_cpu_rounds=2,
        cpu_rounds=2,
        cpu_burst=0.5,
        capacity_rounds=1,
        capacity_burst=0.5,
        capacity_warmup=0.2,
        ordering_rounds=1,
        ordering_events=1000,
        drain_messages=2000,
        soak_minutes=0.25,
        soak_rate=1000.0,
        soak_connections=32,
    )


# -- helpers --------------------------------------------------------------------------


class _Env:
    """What every run shares: the Redis, the log folder, the ports."""

    def __init__(self, redis_url: str, out_dir: Path, port_lo: int, port_hi: int, redis_pid: int | None = None) -> None:
        self.redis_url = redis_url
        #: The private Redis's process, whose CPU the capacity rounds count (None: someone else's Redis).
        self.redis_pid = redis_pid
        self.out_dir = out_dir
        self.port_lo = port_lo
        self.port_hi = port_hi
        self._next_port = port_lo

    def port(self) -> int:
        port = free_port(self._next_port, self.port_hi)
        self._next_port = port + 1
        return port

    def app_env(self, contender: Contender, **extra: str) -> dict[str, str]:
        return {
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_NAMESPACE": NAMESPACE,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(project_root()), os.environ.get("PYTHONPATH")])),
            **contender.env,
            **extra,
        }

    def clean(self) -> None:
        """Delete this benchmark's keys (and only those: the Redis may be shared)."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{NAMESPACE}:*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
        finally:
            client.close()


def probe_redis_writes(url: str, count: int = 200) -> dict[str, float]:
    """Round trip of one small durable write, sequentially: with ``appendfsync always`` this is
    the disk's fsync latency, the floor under every "store, then answer" contender's median."""
    client = redis.Redis.from_url(url)
    samples = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            client.rpush(f"{NAMESPACE}:probe", b"x")
            samples.append((time.perf_counter() - started) * 1000)
        client.delete(f"{NAMESPACE}:probe")
    finally:
        client.close()
    samples.sort()
    return {
        "p50_ms": round(samples[len(samples) // 2], 3),
        "p99_ms": round(samples[int(len(samples) * 0.99)], 3),
        "max_ms": round(samples[-1], 3),
    }


def _headers() -> tuple[tuple[str, str], ...]:
    return (("Authorization", auth_header()), ("X-Hub-Signature-256", signature_header()))


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _sustainable(result: LoadResult) -> bool:
    p99 = result.percentile_ms(99)
    return (
        result.completed > 0
        and not math.isnan(p99)
        and p99 < P99_LIMIT_MS
        and result.error_count == 0
        and result.non_200_count == 0
    )


# -- the HTTP part ----------------------------------------------------------------------


def _measure(gen: LoadGenerator, spec: LoadSpec, label: str, server: ServerProcess | None = None) -> dict[str, Any]:
    cpu_before = server.cpu_seconds() if server is not None else 0.0
    result = gen.run(spec)
    summary = result.summary()
    summary["label"] = label
    if server is not None and result.sent:
        # CPU of every process of the server (warm-up included, hence per request sent): a figure
        # a busy machine disturbs far less than latency, and the one that sets a server's limit.
        summary["server_cpu_us_per_request"] = round((server.cpu_seconds() - cpu_before) / result.sent * 1e6, 1)
    summary["sustainable"] = _sustainable(result)
    # The generator fired late (p99 send lag over BEHIND_MS): the run measured the generator, not the server.
    summary["generator_limited"] = result.generator_behind
    cpu = summary.get("server_cpu_us_per_request")
    _log(
        f"    {label:>10} {spec.rate:>8.0f}/s  p50 {summary['p50_ms']:8.2f}  p99 {summary['p99_ms']:8.2f} ms  "
        f"err {summary['errors']}  non200 {summary['non_200']}  {'ok' if summary['sustainable'] else 'FAIL'}"
        + (f"  cpu {cpu:.0f} us/req" if cpu is not None else "")
        + ("  (generator fell behind)" if summary["generator_limited"] else "")
    )
    return summary


def _search_max(gen: LoadGenerator, base: LoadSpec, plan: Plan) -> dict[str, Any]:
    """Step the rate up geometrically until a step is not sustainable, then bisect."""
    steps: list[dict[str, Any]] = []
    best: float | None = None
    worst: float | None = None
    capped = limited = False

    def step(rate: float, retry: bool = True) -> bool:
        nonlocal limited
        spec = replace(base, rate=rate, duration=plan.search_duration, warmup=plan.search_warmup)
        summary = _measure(gen, spec, "search")
        steps.append(summary)
        passed = bool(summary["sustainable"]) and not summary["generator_limited"]
        if passed:
            return True
        time.sleep(plan.cooldown)
        # A saturated server fails by far (seconds, errors); a marginal failure may be another
        # process's noise on a busy machine, or the generator starved: look again once.
        marginal = summary["errors"] == 0 and summary["non_200"] == 0 and summary["p99_ms"] < 5 * P99_LIMIT_MS
        if retry and (marginal or summary["generator_limited"]):
            return step(rate, retry=False)
        if summary["generator_limited"]:
            limited = True
        return False

    rate = plan.search_start
    if step(rate):
        best = rate
        while True:
            rate = min(rate * plan.search_factor, plan.search_cap)
            if best is not None and rate <= best:
                capped = True
                break
            if step(rate):
                best = rate
            else:
                worst = rate
                break
    else:
        worst = rate
        while rate > 25:  # step down until something passes
            rate /= plan.search_factor
            if step(rate):
                best = rate
                break
            worst = rate
    for _ in range(plan.search_refine):
        if best is None or worst is None or worst - best < max(25.0, best * 0.05):
            break
        mid = round((best + worst) / 2)
        if step(mid):
            best = mid
        else:
            worst = mid
    return {
        "max_rps": best or 0.0,
        "first_failing_rps": worst,
        "capped_at_search_limit": capped,
        "generator_limited": limited,
        "steps": steps,
    }


@contextlib.contextmanager
def _maybe_worker(contender: Contender, env: _Env) -> Iterator[None]:
    if not contender.worker:
        yield
        return
    module = contender.target.split(":")[0]
    worker = WorkerProcess(
        ["-m", "wa_middleware.cli", "worker", f"{module}:wa", "-p", "1", "-t", "8"],
        env.app_env(contender),
        env.out_dir / f"{contender.name}.worker.log",
    )
    # The load starts once the worker consumes, as it would against a deployed worker.
    workers.wait_consuming(env.redis_url, NAMESPACE, worker)
    try:
        yield
    finally:
        worker.stop()


def run_http(
    plan: Plan,
    env: _Env,
    gen: LoadGenerator,
    keep: dict[str, ServerProcess | None] | None = None,
    rounds_out: dict[str, Any] | None = None,
    capacity_out: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure every contender; servers named in ``keep`` (a dict the caller owns) are left
    running and handed back through it, so the worker part can reuse one without a restart.
    The interleaved CPU rounds (`run_cpu_rounds`) go into ``rounds_out`` when given, the
    interleaved capacity rounds (`run_capacity_rounds`) into ``capacity_out``."""
    bodies = tuple(d.body for d in make_deliveries(plan.bodies))
    servers: dict[str, ServerProcess] = {}
    results: dict[str, Any] = {}
    try:
        for name in plan.contenders:
            contender = by_name(name)
            server = ServerProcess(contender, env.port(), env.app_env(contender), env.out_dir)
            server.start()
            servers[name] = server
        for server in servers.values():
            server.wait_ready()
        _log(f"{len(servers)} servers ready")
        for name, server in servers.items():
            contender = server.contender
            _log(f"{name}: {contender.description}")
            base = LoadSpec(
                "127.0.0.1",
                server.port,
                contender.path,
                rate=plan.fixed_rates[0],
                duration=plan.fixed_duration,
                bodies=bodies,
                headers=_headers(),
                warmup=plan.fixed_warmup,
                connections=plan.connections,
                drain_timeout=plan.drain_timeout,
            )
            entry: dict[str, Any] = {
                "description": contender.description,
                "role": contender.role,
                "server": contender.server,
                "command": server.command,
                "env": contender.env,
                "worker_alongside": contender.worker,
                "floor": contender.floor,
                "ceiling": contender.ceiling,
                "fixed": [],
            }
            with _maybe_worker(contender, env):
                if plan.search and (plan.search_only is None or name in plan.search_only):
                    entry["search"] = _search_max(gen, base, plan)
                rates = [(r, f"{r:.0f}/s") for r in plan.fixed_rates]
                max_rps = entry.get("search", {}).get("max_rps")
                if max_rps:
                    rates.append((max(10.0, round(max_rps / 2)), "50% max"))
                for rate, label in rates:
                    entry["fixed"].append(_measure(gen, replace(base, rate=rate), label, server))
                    if not entry["fixed"][-1]["sustainable"]:
                        time.sleep(plan.cooldown)
            results[name] = entry
            env.clean()
        if rounds_out is not None and plan.cpu_rounds:
            rounds_out.update(run_cpu_rounds(plan, env, gen, servers, bodies))
        if capacity_out is not None and plan.capacity_rounds:
            capacity_out.update(run_capacity_rounds(plan, env, servers, bodies))
    finally:
        for name, server in servers.items():
            if keep is not None and name in keep:
                keep[name] = server
            else:
                server.stop()
    return results


def run_cpu_rounds(
    plan: Plan, env: _Env, gen: LoadGenerator, servers: dict[str, ServerProcess], bodies: tuple[bytes, ...]
) -> dict[str, Any]:
    """Server CPU per request, interleaved: ``cpu_rounds`` rounds of one short burst at ``cpu_rate``
    to each wa-middleware contender, its floor and its ceiling in turn (the order reversed every
    other round), so that whatever else the machine does lands on all of them alike. Each round
    gives a ratio to the floor; the report shows their median and range."""
    names = _interleaved_names(servers)
    if not names:
        return {}
    _log(
        f"interleaved CPU: {plan.cpu_rounds} rounds x {len(names)} servers, {plan.cpu_burst} s at {plan.cpu_rate:.0f}/s"
    )
    samples: dict[str, list[float]] = {name: [] for name in names}
    p99: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(plan.cpu_rounds):
        for name in names if round_no % 2 == 0 else names[::-1]:
            server = servers[name]
            spec = LoadSpec(
                "127.0.0.1", server.port, server.contender.path, plan.cpu_rate, plan.cpu_burst, bodies, _headers(),
                warmup=0.2, connections=plan.connections, drain_timeout=plan.drain_timeout,
            )  # fmt: skip
            before = server.cpu_seconds()
            result = gen.run(spec)
            if result.sent:
                samples[name].append((server.cpu_seconds() - before) / result.sent * 1e6)
                p99[name].append(result.percentile_ms(99))
        env.clean()
    out: dict[str, Any] = {"rate": plan.cpu_rate, "burst_s": plan.cpu_burst, "rounds": plan.cpu_rounds, "servers": {}}
    for name in names:
        row: dict[str, Any] = {
            "cpu_us_per_request": [round(v, 1) for v in samples[name]],
            "median_us": round(statistics.median(samples[name]), 1) if samples[name] else None,
            "p99_ms_median": round(statistics.median(p99[name]), 2) if p99[name] else None,
            **_ratios(name, servers, samples),
        }
        out["servers"][name] = row
        _log(
            f"    {name:>22}  {row['median_us']} us/req"
            + (f"  / {row['floor']}: {row['ratio_median']}" if "floor" in row else "")
        )
    return out


def _interleaved_names(servers: dict[str, ServerProcess]) -> list[str]:
    """The servers the interleaved rounds compare: every wa-middleware contender with its floor and
    ceiling (those with a worker alongside measure the worker too, so they are left out)."""
    return [
        name
        for name, server in servers.items()
        if server.contender.role in ("wa", "floor", "ceiling") and not server.contender.worker
    ]


def _ratios(name: str, servers: dict[str, ServerProcess], samples: dict[str, list[float]]) -> dict[str, Any]:
    """Round by round, ``name``'s sample over its floor's: their median and range (empty without a floor)."""
    floor = servers[name].contender.floor
    if floor not in samples or not samples[floor] or len(samples[floor]) != len(samples[name]):
        return {}
    ratios = sorted(a / b for a, b in zip(samples[name], samples[floor], strict=True) if b)
    if not ratios:
        return {}
    return {"floor": floor, "ratio_median": round(statistics.median(ratios), 3),
            "ratio_min": round(ratios[0], 3), "ratio_max": round(ratios[-1], 3)}  # fmt: skip


def _redis_cpu(env: _Env) -> float:
    return process_cpu_seconds(env.redis_pid) if env.redis_pid else 0.0


def run_capacity_rounds(
    plan: Plan, env: _Env, servers: dict[str, ServerProcess], bodies: tuple[bytes, ...]
) -> dict[str, Any]:
    """Capacity, interleaved: ``capacity_rounds`` rounds of one closed-loop burst (`capacity`:
    ``connections`` clients, each sending again as soon as it is answered) to each wa-middleware
    contender, its floor and its ceiling in turn, the order reversed every other round. Each round
    gives a ratio to the floor (the two measured seconds apart, under the same weather); the report
    judges the targets on their median."""
    from . import capacity

    names = _interleaved_names(servers)
    if not names:
        return {}
    _log(
        f"interleaved capacity: {plan.capacity_rounds} rounds x {len(names)} servers, "
        f"{plan.capacity_burst} s closed loop, {plan.connections} connections"
    )
    samples: dict[str, list[float]] = {name: [] for name in names}
    bad: dict[str, int] = {name: 0 for name in names}
    # CPU per answer at saturation, of the server's processes and of Redis (warm-up included: the
    # whole burst's CPU over the whole burst's answers, estimated from the measured rate).
    server_cpu: dict[str, list[float]] = {name: [] for name in names}
    redis_cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(plan.capacity_rounds):
        for name in names if round_no % 2 == 0 else names[::-1]:
            server = servers[name]
            before = server.cpu_seconds(), _redis_cpu(env)
            burst = capacity.measure(
                "127.0.0.1", server.port, server.contender.path, _headers(), bodies,
                connections=plan.connections, duration=plan.capacity_burst, warmup=plan.capacity_warmup,
            )  # fmt: skip
            answered = burst.ok_per_second * (plan.capacity_burst + plan.capacity_warmup)
            if answered:
                server_cpu[name].append((server.cpu_seconds() - before[0]) / answered * 1e6)
                redis_cpu[name].append((_redis_cpu(env) - before[1]) / answered * 1e6)
            samples[name].append(burst.ok_per_second)
            bad[name] += burst.errors + sum(v for k, v in burst.answers.items() if k != 200)
            time.sleep(plan.cooldown)
        env.clean()
        _log(f"    round {round_no + 1}: " + ", ".join(f"{name} {samples[name][-1]:.0f}" for name in names))
    out: dict[str, Any] = {"rounds": plan.capacity_rounds, "burst_s": plan.capacity_burst,
                           "connections": plan.connections, "servers": {}}  # fmt: skip
    for name in names:
        row: dict[str, Any] = {
            "ok_per_s": [round(v, 1) for v in samples[name]],
            "median_ok_per_s": round(statistics.median(samples[name]), 1) if samples[name] else None,
            "not_ok": bad[name],
            "server_cpu_us_median": round(statistics.median(server_cpu[name]), 1) if server_cpu[name] else None,
            "redis_cpu_us_median": round(statistics.median(redis_cpu[name]), 1)
            if redis_cpu[name] and env.redis_pid
            else None,
            **_ratios(name, servers, samples),
        }
        out["servers"][name] = row
        ratio = (
            f"  / {row['floor']}: {row['ratio_median']} ({row['ratio_min']}-{row['ratio_max']})"
            if "floor" in row
            else ""
        )
        _log(
            f"    {name:>22}  {row['median_ok_per_s']} ok/s  cpu/answer: server {row['server_cpu_us_median']} us,"
            f" redis {row['redis_cpu_us_median']} us" + ratio + (f"  not 200: {row['not_ok']}" if row["not_ok"] else "")
        )
    return out


def run_request_cpu(plan: Plan, port_range: tuple[int, int]) -> dict[str, Any]:
    """CPU per request of the request path in process, next to the floor's LPUSH (`request_cpu`)."""
    from . import request_cpu

    _log(f"request path CPU, in process: {plan.request_cpu_requests} requests x {plan.request_cpu_rounds} rounds")
    result = request_cpu.measure([1, 8, 32], plan.request_cpu_requests, plan.request_cpu_rounds, port_range)
    for name, row in result["figures"].items():
        _log(f"    {name:>10}  " + "  ".join(f"x{level} {value:.1f} us" for level, value in row.items()))
    return result


# -- worker side ----------------------------------------------------------------------


def _post(gen: LoadGenerator, port: int, bodies: tuple[bytes, ...], count: int, rate: float) -> LoadResult:
    spec = LoadSpec(
        "127.0.0.1", port, "/webhook", rate, count / rate, bodies, _headers(), warmup=0.0, drain_timeout=5.0
    )
    return gen.run(spec)


def run_workers(plan: Plan, env: _Env, gen: LoadGenerator, server: ServerProcess | None = None) -> dict[str, Any]:
    """The worker-side figures; ``server`` is a running wa-starlette server to reuse, if any."""
    contender = by_name("wa-starlette")
    out: dict[str, Any] = {}
    bodies = tuple(d.body for d in make_deliveries(plan.bodies))
    wa_worker = ["-m", "wa_middleware.cli", "worker", "benchmarks.contenders.wa_starlette:wa", "-p", "1", "-t", "8"]

    # 1. wa-middleware no-op callbacks: preload through the real middleware, then drain.
    queue = contender.env.get("BENCH_QUEUE", "bench")
    app_env = env.app_env(contender)
    if server is None:
        server = ServerProcess(replace(contender, name="wa-worker-preload"), env.port(), app_env, env.out_dir)
        server.start()
    try:
        server.wait_ready()
        env.clean()
        posted = _post(gen, server.port, bodies, plan.worker_messages, min(2000.0, plan.worker_messages / 1.0))
        _log(f"worker: preloaded {posted.ok} deliveries through the middleware ({posted.error_count} errors)")
        out["wa_middleware"] = workers.drain_rate(
            env.redis_url,
            workers.queue_hash(NAMESPACE, queue),
            wa_worker,
            app_env,
            env.out_dir / "wa-worker.log",
            timeout=max(30.0, plan.worker_messages / 100),
        )
        # Every event of the mix matches one no-op callback: a delivery runs as many callbacks as it has events.
        per_delivery = sum(len(d.event_ids) for d in make_deliveries(plan.bodies)) / plan.bodies
        out["wa_middleware"]["callbacks_per_delivery"] = round(per_delivery, 3)
        out["wa_middleware"]["callbacks_per_second"] = round(out["wa_middleware"]["per_second"] * per_delivery, 1)
        _log(
            f"worker: wa-middleware {out['wa_middleware']['per_second']} deliveries/s, "
            f"{out['wa_middleware']['callbacks_per_second']} callbacks/s (1 process, 8 threads)"
        )

        # 2. Lag from acceptance to callback start, with a worker running and a steady load.
        env.clean()
        lag_env = env.app_env(contender, BENCH_LAG_KEY=f"{NAMESPACE}:lag")
        worker = WorkerProcess(wa_worker, lag_env, env.out_dir / "wa-worker-lag.log")
        try:
            workers.wait_consuming(env.redis_url, NAMESPACE, worker)
            count = int(plan.lag_rate * plan.lag_duration)
            _post(gen, server.port, bodies, count, plan.lag_rate)
            deadline = time.monotonic() + 10
            client = redis.Redis.from_url(env.redis_url)
            while time.monotonic() < deadline and client.hlen(workers.queue_hash(NAMESPACE, queue)):
                time.sleep(0.05)
            client.close()
        finally:
            worker.stop()
        out["lag"] = {"rate": plan.lag_rate, **workers.lag_figures(env.redis_url, f"{NAMESPACE}:lag")}
        _log(f"worker: lag from acceptance to callback start {out['lag']}")
    finally:
        server.stop()
        env.clean()

    # 3. Stock dramatiq, the same drain with a no-op actor.
    os.environ.update({"BENCH_REDIS_URL": env.redis_url, "BENCH_NAMESPACE": NAMESPACE})
    workers.preload_stock(plan.worker_messages, bodies[0].decode())
    out["dramatiq_stock"] = workers.drain_rate(
        env.redis_url,
        workers.queue_hash(NAMESPACE, "stock"),
        ["-m", "dramatiq", "benchmarks.contenders.dramatiq_stock", "-p", "1", "-t", "8", "--queues", "stock"],
        env.app_env(contender),
        env.out_dir / "dramatiq-stock.log",
        timeout=max(30.0, plan.worker_messages / 100),
    )
    _log(f"worker: stock dramatiq {out['dramatiq_stock']['per_second']} messages/s (1 process, 8 threads)")
    env.clean()
    return out


# -- crash comparison -----------------------------------------------------------------


def run_ordering(plan: Plan, redis_url: str) -> dict[str, Any]:
    """What ordering costs a worker process: the same single-event deliveries drained unordered and
    ordered over 20 interleaved conversations, in ``ordering_rounds`` interleaved rounds (the ratio
    taken round by round, per CPU-second of the worker: the machine's speed drifts between rounds),
    then ordered in one conversation (strictly serial) once. Each case keeps its median round."""
    from . import ordering_bench

    events = plan.ordering_events
    runs: dict[str, list[dict[str, Any]]] = {"wa-unordered-20": [], "wa-ordered-20": []}
    for round_no in range(plan.ordering_rounds):
        for key in runs:
            name = key.rsplit("-", 1)[0]
            _log(f"ordering round {round_no + 1}/{plan.ordering_rounds}: {name}, 20 conversations, {events} events")
            runs[key].append({**ordering_bench.run_case(name, redis_url, events, 20, threads=8), "conversations": 20})
    _log(f"ordering: wa-ordered, 1 conversation, {events} events")
    serial = ordering_bench.run_case("wa-ordered", redis_url, events, 1, threads=8)
    out: dict[str, Any] = {key: _median_run(found) for key, found in runs.items()}
    out["wa-ordered-1"] = {**serial, "conversations": 1}
    ratios = [
        o["events_per_cpu_s"] / u["events_per_cpu_s"]
        for u, o in zip(runs["wa-unordered-20"], runs["wa-ordered-20"], strict=True)
        if u["events_per_cpu_s"] and o["events_per_cpu_s"]
    ]
    out["rounds"] = {
        "unordered_per_cpu_s": [r["events_per_cpu_s"] for r in runs["wa-unordered-20"]],
        "ordered_per_cpu_s": [r["events_per_cpu_s"] for r in runs["wa-ordered-20"]],
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
    }
    return out


def run_drain(plan: Plan, out_dir: Path) -> dict[str, Any]:
    """One worker process draining single-event deliveries (the sender's mix, no-op callbacks) beside
    stock dramatiq's no-op actor, each on a private redis-server with ``appendfsync always``; and
    the Redis memory each event leaves once drained (`worker_drain`)."""
    from . import worker_drain

    _log(f"drain: {plan.drain_messages} single-event deliveries, wa-middleware then stock dramatiq")
    return worker_drain.run(plan.drain_messages, 8, out=out_dir)


def run_soak(plan: Plan, out_dir: Path) -> dict[str, Any]:
    """The seed's load end to end on this machine (`soak`): web process, two worker processes and a
    Redis with ``appendfsync always``, for ``soak_minutes``; its timeline stays in its own file."""
    from . import soak

    settings = soak.settings(minutes=plan.soak_minutes, rate=plan.soak_rate, connections=plan.soak_connections,
                             out=str(out_dir))  # fmt: skip
    _log(f"soak: {settings.rate or settings.statuses + settings.messages:.0f} deliveries/s for {plan.soak_minutes} min")
    result = soak.run(settings)
    summary = {key: result[key] for key in ("settings", "http", "callbacks", "cores", "memory")}
    summary["verdict"] = soak.verdict(result)
    summary["file"] = Path(result["path"]).name
    summary["plot"] = Path(result["path"]).with_suffix(".png").name
    return summary


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median events per CPU-second (the lower middle one of an even count)."""
    ranked = sorted(runs, key=lambda r: r["events_per_cpu_s"] or 0)
    return ranked[(len(ranked) - 1) // 2]


def run_crash(plan: Plan, env: _Env) -> dict[str, Any]:
    deliveries = crash.single_event_deliveries(plan.crash_deliveries)
    out: dict[str, Any] = {}
    for name in plan.crash_contenders:
        contender = by_name(name)
        record_key = f"{NAMESPACE}:handled:{name}"
        extra = {"BENCH_SLEEP_MS": "100", "BENCH_RECORD_KEY": record_key, "BENCH_QUEUE": "bench_crash"}
        app_env = env.app_env(contender, **extra)
        port = env.port()
        server = ServerProcess(replace(contender, name=f"crash-{name}"), port, app_env, env.out_dir)
        env.clean()
        server.start()
        try:
            server.wait_ready()
            time.sleep(0.3)  # the readiness probe's own delivery: let its handler finish, then forget it
            env.clean()
            acked, kill_delay = crash.post_then_kill(port, deliveries, plan.crash_rate, server.kill9)
            server.reap()
            server.start()  # restart, as a supervisor would
            server.wait_ready()
            notes = "pywa: handlers run as in-process background tasks; nothing to resume after a restart"
            if contender.role == "wa":
                worker = WorkerProcess(
                    ["-m", "wa_middleware.cli", "worker", f"{contender.target.split(':')[0]}:wa", "-p", "1", "-t", "8"],
                    app_env,
                    env.out_dir / f"crash-{name}.worker.log",
                )
                client = redis.Redis.from_url(env.redis_url)
                try:
                    # Until the queue is empty (a message leaves it when its callbacks are done),
                    # with twice the time 8 threads need for the 100 ms handlers as a bound.
                    deadline = time.monotonic() + 10 + plan.crash_deliveries * 0.1 / 8 * 2
                    while time.monotonic() < deadline and client.hlen(f"{NAMESPACE}:bench_crash.msgs"):
                        time.sleep(0.1)
                finally:
                    client.close()
                    worker.stop()
                notes = "wa-middleware worker started after the restart: wa-middleware worker MODULE:wa -p 1 -t 8"
            else:
                time.sleep(0.5)  # nothing can resume pywa's lost tasks; a moment for any straggler
        finally:
            server.stop()
        ids = {eid for d, ok in zip(deliveries, acked, strict=True) if ok for eid in d.event_ids}
        handled = crash.count_handled(env.redis_url, record_key, ids)
        outcome = crash.CrashOutcome(name, len(deliveries), sum(acked), handled, len(ids) - handled, kill_delay, notes)
        out[name] = outcome.asdict()
        _log(f"crash: {name}: {outcome.acknowledged} acknowledged, {outcome.handled} handled, {outcome.lost} lost")
    env.clean()
    return out


# -- environment and entry point ------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in (
        "wa-middleware", "uvicorn", "uvloop", "httptools", "gunicorn", "starlette", "fastapi", "flask",
        "werkzeug", "pywa", "dramatiq", "redis", "msgspec", "hdrhistogram",
    ):  # fmt: skip
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def environment(redis_info: dict[str, Any], plan: Plan) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "versions": _versions(),
        "redis": redis_info,
        "loadgen": {
            "processes": plan.loadgen_processes,
            "connections": plan.connections,
            "kind": "open loop, constant arrival schedule, latency from the scheduled send time "
            "(wa_middleware.ops.loadtest, the engine of wa-middleware loadtest)",
        },
        "plan": dict(plan.__dict__),
    }


def run(plan: Plan, out_root: Path, redis_url: str | None = None, port_range: tuple[int, int] = (7100, 7199)) -> Path:
    """Run ``plan``; returns the results directory."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = out_root / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "logs").mkdir(exist_ok=True)
    started = time.monotonic()
    own_redis: RedisServer | None = None
    if redis_url is None:
        own_redis = RedisServer(free_port(*port_range), appendfsync=plan.appendfsync)
        redis_url = own_redis.url
        redis_info: dict[str, Any] = {
            "url": redis_url,
            "own": True,
            "version": own_redis.version,
            "flags": own_redis.flags,
        }
    else:
        redis_info = {"url": redis_url, "own": False}
    env = _Env(redis_url, out_dir / "logs", port_range[0], port_range[1], own_redis.pid if own_redis else None)
    results: dict[str, Any] = {"mode": plan.mode, "started_utc": stamp, "environment": environment(redis_info, plan)}
    try:
        env.clean()
        redis_info["write_latency_before"] = probe_redis_writes(redis_url)
        kept: dict[str, ServerProcess | None] = {"wa-starlette": None} if plan.worker else {}
        with LoadGenerator(plan.loadgen_processes) as gen:
            try:
                rounds: dict[str, Any] = {}
                capacity: dict[str, Any] = {}
                results["http"] = run_http(plan, env, gen, keep=kept, rounds_out=rounds, capacity_out=capacity)
                if rounds:
                    results["cpu_rounds"] = rounds
                if capacity:
                    results["capacity_rounds"] = capacity
                redis_info["write_latency_after_http"] = probe_redis_writes(redis_url)
                if plan.request_cpu:
                    results["request_cpu"] = run_request_cpu(plan, port_range)
                if plan.worker:
                    results["worker"] = run_workers(plan, env, gen, kept.get("wa-starlette"))
            finally:
                for server in kept.values():
                    if server is not None:
                        server.stop()
        if plan.worker:
            results["ordering"] = run_ordering(plan, redis_url)
        if plan.crash:
            results["crash"] = run_crash(plan, env)
        if plan.worker and plan.drain_messages:
            results["drain"] = run_drain(plan, out_dir)
        if plan.worker and plan.soak_minutes:
            results["soak"] = run_soak(plan, out_dir)
    finally:
        with contextlib.suppress(Exception):
            env.clean()
        if own_redis is not None:
            own_redis.stop()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    report.write(results, out_dir)
    # results/latest/ is what the README links to (the timestamped folders are not committed).
    latest = out_root / "latest"
    shutil.rmtree(latest, ignore_errors=True)
    shutil.copytree(out_dir, latest, ignore=shutil.ignore_patterns("logs"))
    _log(f"done in {results['elapsed_s']} s: {out_dir}")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the under-a-minute run (fewer rates, shorter steps)")
    parser.add_argument("--contenders", help="comma-separated subset; known: " + ", ".join(c.name for c in CONTENDERS))
    parser.add_argument("--rates", help="comma-separated fixed rates in req/s (default 200,500,1000; quick: 200)")
    parser.add_argument("--duration", type=float, help="seconds measured at each fixed rate")
    parser.add_argument("--connections", type=int, help="keep-alive connections of the load generator (default 32)")
    parser.add_argument("--loadgen-processes", type=int, help="generator processes sharing the load (default 1)")
    parser.add_argument("--no-search", action="store_true", help="skip the max-throughput search")
    parser.add_argument("--no-worker", action="store_true", help="skip the worker-side figures")
    parser.add_argument("--no-crash", action="store_true", help="skip the crash comparison")
    parser.add_argument("--no-request-cpu", action="store_true", help="skip the in-process CPU per request")
    parser.add_argument("--cpu-rounds", type=int, help="interleaved server-CPU rounds (default 8; 0 skips them)")
    parser.add_argument(
        "--capacity-rounds", type=int, help="interleaved closed-loop capacity rounds (default 5; 0 skips them)"
    )
    parser.add_argument("--drain-messages", type=int, help="single-event deliveries drained (default 30000; 0 skips)")
    parser.add_argument("--soak-minutes", type=float, help="minutes of the end-to-end soak (default 10; 0 skips it)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private redis-server")
    parser.add_argument(
        "--appendfsync",
        choices=["always", "everysec", "no"],
        help="AOF fsync policy of the private Redis (default always: a 200 means the delivery is on disk)",
    )
    parser.add_argument("--ports", default="7100-7199", help="port range for the servers (default 7100-7199)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="results root directory")
    args = parser.parse_args(argv)

    plan = quick_plan() if args.quick else full_plan()
    changes: dict[str, Any] = {}
    if args.contenders:
        names = tuple(n.strip() for n in args.contenders.split(",") if n.strip())
        for name in names:
            by_name(name)
        changes["contenders"] = names
        changes["crash_contenders"] = tuple(n for n in plan.crash_contenders if n in names)
    if args.rates:
        changes["fixed_rates"] = tuple(float(r) for r in args.rates.split(","))
    if args.duration:
        changes["fixed_duration"] = args.duration
    if args.connections:
        changes["connections"] = args.connections
    if args.loadgen_processes:
        changes["loadgen_processes"] = args.loadgen_processes
    if args.appendfsync:
        changes["appendfsync"] = args.appendfsync
    if args.no_search:
        changes["search"] = False
    if args.no_worker:
        changes["worker"] = False
    if args.no_crash:
        changes["crash"] = False
    if args.no_request_cpu:
        changes["request_cpu"] = False
    if args.cpu_rounds is not None:
        changes["cpu_rounds"] = args.cpu_rounds
    if args.capacity_rounds is not None:
        changes["capacity_rounds"] = args.capacity_rounds
    if args.drain_messages is not None:
        changes["drain_messages"] = args.drain_messages
    if args.soak_minutes is not None:
        changes["soak_minutes"] = args.soak_minutes
    plan = replace(plan, **changes)
    lo, _, hi = args.ports.partition("-")
    run(plan, Path(args.out), redis_url=args.redis_url, port_range=(int(lo), int(hi or lo)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
