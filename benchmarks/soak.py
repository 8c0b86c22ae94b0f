"""The soak: the sender's mix, end to end on one machine, for minutes.

``python -m benchmarks.soak [--minutes 10] [--rate 3300] [--processes 2] [--threads 8]``: a private
redis-server (AOF, ``appendfsync always``), one uvicorn process serving `benchmarks.soak_app`,
``wa-middleware worker -p P -t T`` beside it and the open-loop generator of ``wa-middleware
loadtest`` posting the sender's mix (3,000 statuses to 300 messages a second by default, unique
ids, some statuses batched) for the whole run. It records, over time: the HTTP latency
percentiles, the backlog (queue depth, deliveries not finished), the lag from the 200 to the
callback start (sampled: one event in ``SOAK_LAG_EVERY``), and at the end: whether every event ran
once, how long the backlog took to drain, and Redis's memory per event once drained.

Results go to ``benchmarks/results/soak-<time>.json`` (and ``.png`` when matplotlib is installed), the
servers' logs to ``benchmarks/results/logs/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

from wa_middleware.cli.loadtest import sender_mix
from wa_middleware.keys import KeyLayout
from wa_middleware.ops.loadtest import Credentials, LoadGenerator, LoadSpec, QueueWatch

from .contenders import Contender
from .payloads import AUTH_PASSWORD, AUTH_USER
from .servers import RedisServer, ServerProcess, WorkerProcess, free_port, tree_cpu_seconds

NAMESPACE = "wasoak"
QUEUE = "soak"
COUNT_KEY = f"{NAMESPACE}:soak:ran"
LAG_KEY = f"{NAMESPACE}:soak:lag"


def _events_in(body: bytes) -> int:
    """How many events (messages and statuses) a delivery body holds: each runs one callback."""
    value = json.loads(body)
    return sum(
        len(change["value"].get("messages", ())) + len(change["value"].get("statuses", ()))
        for entry in value["entry"]
        for change in entry["changes"]
    )


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (every core; Linux ``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_snapshot(server: ServerProcess, worker: WorkerProcess, redis_server: RedisServer) -> dict[str, float]:
    return {
        "web": server.cpu_seconds(),
        "workers": tree_cpu_seconds(worker.pid),
        "redis": tree_cpu_seconds(redis_server.pid),
        "machine": _machine_busy_seconds(),
    }


def _cores(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores each part used over ``seconds``; ``rest`` is the generator, the sampler and anything else."""
    used = {part: (after[part] - before[part]) / seconds for part in before}
    used["rest"] = used["machine"] - used["web"] - used["workers"] - used["redis"]
    return {part: round(value, 3) for part, value in used.items()}


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)


class _Sampler:
    """Every ``interval`` s: used memory, events run, and the callbacks' lag samples since the last."""

    def __init__(self, url: str, interval: float = 5.0) -> None:
        self.client = redis.Redis.from_url(url)
        self.interval = interval
        self.rows: list[dict[str, Any]] = []
        self.lags: list[tuple[float, float]] = []  # (wall time, ms)
        self._read = 0
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def take_lags(self) -> list[tuple[float, float]]:
        raw = self.client.lrange(LAG_KEY, self._read, -1)
        self._read += len(raw)
        out = []
        for item in raw:
            at, _, ms = item.decode().partition(":")
            out.append((float(at), float(ms)))
        self.lags += out
        return out

    def sample(self) -> None:
        fresh = [ms for _, ms in self.take_lags()]
        info = self.client.info("memory")
        self.rows.append({
            "elapsed": round(time.monotonic() - self._started, 1),
            "used_memory": int(info["used_memory"]),
            "ran": int(self.client.get(COUNT_KEY) or 0),
            "lag_p50_ms": _pct(fresh, 50),
            "lag_p99_ms": _pct(fresh, 99),
            "lag_max_ms": max(fresh) if fresh else None,
        })  # fmt: skip

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except redis.RedisError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def run(args: argparse.Namespace) -> dict[str, Any]:
    duration = args.minutes * 60
    status_share = args.statuses / (args.statuses + args.messages)
    rate = args.rate or (args.statuses + args.messages)
    bodies = sender_mix(status_share)
    per_body = [_events_in(b) for b in bodies]
    server_redis = RedisServer(free_port(7300, 7399), appendfsync="always")
    env = {
        "BENCH_REDIS_URL": server_redis.url, "BENCH_NAMESPACE": NAMESPACE, "BENCH_QUEUE": QUEUE,
        "SOAK_LAG_EVERY": str(args.lag_every), "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }  # fmt: skip
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    contender = Contender("soak", "benchmarks.soak_app:app", "uvicorn", "wa-middleware in a Starlette app", "wa")
    logs = out_dir / "logs"  # (ignored by git, as the runner's logs are)
    logs.mkdir(exist_ok=True)
    server = ServerProcess(contender, free_port(7400, 7499), env, logs)
    worker_args = ["-m", "wa_middleware.cli", "worker", "benchmarks.soak_app:wa", "-p", str(args.processes),
                   "-t", str(args.threads)]  # fmt: skip
    worker: WorkerProcess | None = None
    client = redis.Redis.from_url(server_redis.url)
    keys = KeyLayout(namespace=NAMESPACE, queue_name=QUEUE)
    result: dict[str, Any] = {}
    try:
        server.start()
        server.wait_ready()
        worker = WorkerProcess(worker_args, {**os.environ, **env}, logs / f"soak-worker-{stamp}.log")
        deadline = time.monotonic() + 60
        while client.hlen(keys.messages) and time.monotonic() < deadline:  # the readiness probe's delivery
            time.sleep(0.1)
        time.sleep(1.0)
        client.delete(COUNT_KEY, LAG_KEY)
        baseline = int(client.info("memory")["used_memory"])
        spec = LoadSpec.for_url(
            f"http://127.0.0.1:{server.port}/webhook", rate=rate, duration=duration, bodies=bodies,
            connections=args.connections, credentials=Credentials(basic=(AUTH_USER, AUTH_PASSWORD)), warmup=0.0,
        )  # fmt: skip
        watch = QueueWatch(server_redis.url, keys, interval=1.0)
        sampler = _Sampler(server_redis.url)
        generator = LoadGenerator(args.generators)
        progress_rows: list[dict[str, Any]] = []

        def progress(row: Any) -> None:
            progress_rows.append({"elapsed": row.elapsed, "p50_ms": row.p50_ms, "p99_ms": row.p99_ms,
                                  "max_ms": row.max_ms, "answered_per_s": row.answered_per_s})  # fmt: skip
            if int(row.elapsed) % 30 == 0:
                print(f"  {row.elapsed:6.0f} s  {row.answered_per_s:7.0f}/s  p50 {row.p50_ms:.1f} ms  "
                      f"p99 {row.p99_ms:.1f} ms", flush=True)  # fmt: skip

        watch.start(rate)
        sampler.start()
        cpu_before = _cpu_snapshot(server, worker, server_redis)
        started = time.monotonic()
        try:
            load = generator.run(spec, progress)
        finally:
            generator.close()
        load_end = time.monotonic()
        cores = _cores(cpu_before, _cpu_snapshot(server, worker, server_redis), load_end - started)
        # Drain: until every delivery is finished (HLEN of the message hash) and the flushers caught up.
        expected = sum(per_body[k % len(bodies)] for k in range(load.sent)) if load.ok == load.sent else None
        while client.hlen(keys.messages) and time.monotonic() < load_end + 600:
            time.sleep(0.2)
        drained_after = time.monotonic() - load_end
        time.sleep(1.5)  # the callbacks' figures are flushed every 0.5 s
        queue_report = watch.stop()
        sampler.stop()
        sampler.sample()
        ran = int(client.get(COUNT_KEY) or 0)
        lags = [ms for _, ms in sampler.lags]
        stats = {k.decode(): int(v) for k, v in client.hgetall(keys.stats).items()}
        client.delete(COUNT_KEY, LAG_KEY)
        time.sleep(0.5)
        used_after = int(client.info("memory")["used_memory"])
        left: dict[str, int] = {}
        for key in client.scan_iter(count=1000):  # what is left, by kind (every per-event key shows here)
            kind = ":".join(key.decode().split(":")[:3])
            left[kind] = left.get(kind, 0) + 1
        events = expected if expected is not None else ran
        result = {
            "when": stamp,
            "settings": {"minutes": args.minutes, "rate": rate, "status_share": round(status_share, 4),
                         "processes": args.processes, "threads": args.threads, "connections": args.connections,
                         "generators": args.generators, "redis": server_redis.flags, "server": server.command},
            "http": {"sent": load.sent, "ok": load.ok, "non_200": load.non_200, "errors": load.errors,
                     "p50_ms": round(load.percentile_ms(50), 2), "p99_ms": round(load.percentile_ms(99), 2),
                     "max_ms": round(load.histogram.max() / 1000, 2),
                     "over_1s_share": load.over_1s_fraction, "generator_behind": load.generator_behind,
                     "duration_s": round(load_end - started, 1)},
            "callbacks": {"events_expected": expected, "events_ran": ran, "stats": stats,
                          "lag_samples": len(lags), "lag_p50_ms": _pct(lags, 50), "lag_p99_ms": _pct(lags, 99),
                          "lag_max_ms": max(lags) if lags else None, "drained_after_load_s": round(drained_after, 1),
                          "max_depth": max((s.depth for s in queue_report.samples), default=0)},
            "cores": cores,
            "memory": {"baseline": baseline, "after_drain": used_after,
                       "per_event": round((used_after - baseline) / events, 1) if events else None,
                       "keys_left": dict(sorted(left.items(), key=lambda kv: -kv[1])[:12])},
            "timeline": {"http": progress_rows, "queue": [s.__dict__ for s in queue_report.samples],
                         "worker": sampler.rows},
        }  # fmt: skip
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
        client.close()
        server_redis.stop()
    path = out_dir / f"soak-{stamp}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    _plot(result, out_dir / f"soak-{stamp}.png")
    result["path"] = str(path)
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    figure = Figure(figsize=(10, 9))
    FigureCanvasAgg(figure)
    http, latency, backlog, memory = figure.subplots(4, 1, sharex=True)
    rows = result["timeline"]["http"]
    xs = [r["elapsed"] for r in rows]
    for key in ("p50_ms", "p99_ms"):
        http.plot(xs, [r[key] for r in rows], label=f"HTTP {key[:-3]}")
    http.set_ylabel("ms")
    http.set_yscale("log")
    http.legend(loc="upper right")
    worker = result["timeline"]["worker"]
    wx = [r["elapsed"] for r in worker]
    latency.plot(wx, [r["lag_p99_ms"] or math.nan for r in worker], label="200 -> callback p99", color="tab:red")
    latency.plot(wx, [r["lag_p50_ms"] or math.nan for r in worker], label="p50", color="tab:orange")
    latency.set_ylabel("ms")
    latency.legend(loc="upper right")
    queue = result["timeline"]["queue"]
    backlog.plot([s["elapsed"] for s in queue], [s["unfinished"] for s in queue], label="deliveries not finished")
    backlog.set_ylabel("deliveries")
    backlog.legend(loc="upper right")
    memory.plot(wx, [r["used_memory"] / 2**20 for r in worker], label="Redis used_memory")
    memory.set_ylabel("MiB")
    memory.set_xlabel("seconds")
    memory.legend(loc="upper left")
    figure.suptitle(f"soak: {result['settings']['rate']:.0f} deliveries/s for {result['settings']['minutes']} min")
    figure.savefig(path, dpi=90)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--statuses", type=float, default=3000.0, help="status deliveries per second")
    parser.add_argument("--messages", type=float, default=300.0, help="message deliveries per second")
    parser.add_argument("--rate", type=float, default=0.0, help="total deliveries/s (default: statuses + messages)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument("--lag-every", type=int, default=10, help="sample the lag of one event in N")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    return parser


def settings(**overrides: Any) -> argparse.Namespace:
    """The soak's settings: the command line's defaults, with ``overrides`` (the full benchmark run's)."""
    args = parser().parse_args([])
    for name, value in overrides.items():
        if not hasattr(args, name):
            raise TypeError(f"no soak setting {name!r}")
        setattr(args, name, value)
    return args


#: What the issue asks of the seed's load, end to end.
LAG_P99_MS = 1000.0
BYTES_PER_EVENT = 24.0


def verdict(result: dict[str, Any]) -> dict[str, bool]:
    """Each of the soak's targets, met or not."""
    http, callbacks, memory = result["http"], result["callbacks"], result["memory"]
    lag = callbacks["lag_p99_ms"]
    return {
        "standard": http["p50_ms"] <= 250 and http["over_1s_share"] < 0.01 and http["ok"] == http["sent"],
        "once": callbacks["events_expected"] == callbacks["events_ran"] and not callbacks["stats"].get("duplicates"),
        "lag": lag is not None and lag <= LAG_P99_MS,
        # Not growing: what was waiting when the load stopped ran within seconds (a backlog that grew
        # for the whole run would take about as long again to drain).
        "backlog": callbacks["drained_after_load_s"] <= 10.0,
        "memory": memory["per_event"] is not None and memory["per_event"] <= BYTES_PER_EVENT,
    }


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    http, callbacks, memory = result["http"], result["callbacks"], result["memory"]
    shown = {"http": http, "callbacks": callbacks, "cores": result["cores"], "memory": memory}
    print(json.dumps(shown, indent=1, default=str))
    met = verdict(result)
    print(f"sender's standard held: {met['standard']}; every event once: {met['once']}; "
          f"lag p99 {callbacks['lag_p99_ms']} ms; drained {callbacks['drained_after_load_s']} s after the load; "
          f"{memory['per_event']} bytes/event once drained")  # fmt: skip
    print(f"wrote {result['path']}")
    return 0 if met["standard"] and met["once"] else 1


if __name__ == "__main__":
    sys.exit(main())
