"""Worker throughput: stock dramatiq no-op messages vs wa-middleware events, unordered and ordered.

Run ``python -m benchmarks.ordering_bench [--events N] [--threads T]``. It needs a Redis (``WA_BENCH_REDIS``,
default ``redis://127.0.0.1:6379/0``) and uses a key namespace of its own, deleted afterwards. Each case
pre-loads the queue with N single-event deliveries (C conversations, messages interleaved across them),
starts ONE worker process and measures how long it takes to drain the queue: events per second per
worker process, in wall-clock time and per CPU-second of the worker process (the machine may be busy).
``--conversations 20,1`` runs each wa case once per conversation count: 20 conversations interleaved,
and all in one conversation (the worst case for ordering). ``WA_BENCH_CODE=/path/to/other/checkout``
runs the worker from another version of the package, to compare before and after a change.
``--repeat N`` runs the cases in N interleaved rounds and prints ordered / unordered per CPU-second
round by round, with the median; ``--code .,/path/to/other/checkout`` interleaves two versions of the
worker round by round as well. Results go to ``benchmarks/results/ordering-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from wa_middleware import testing

from .servers import tree_cpu_seconds

HERE = Path(__file__).parent
ROOT = HERE.parent
QUEUE = "wa_middleware"


def delivery(conversation: int, seq: int) -> bytes:
    return testing.text(
        f"message {seq}",
        sender=f"49151{conversation:08d}",
        name="Bench",
        id=f"wamid.B{conversation}.{seq}.{uuid.uuid4().hex[:8]}",
        timestamp=str(int(time.time())),
        phone_number_id="1000001",
    ).to_bytes()


def preload(client: redis.Redis, namespace: str, messages: list[tuple[str, bytes]]) -> None:
    full = f"{namespace}:{QUEUE}"
    for start in range(0, len(messages), 1000):
        chunk = messages[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        pipe.hset(f"{full}.msgs", mapping=dict(chunk))  # type: ignore[arg-type]
        pipe.rpush(full, *(mid for mid, _ in chunk))
        pipe.execute()


def wa_messages(events: int, conversations: int) -> list[tuple[str, bytes]]:
    from wa_middleware.web.auth import NoAuth
    from wa_middleware.web.core import Core

    core = Core(path="/webhook", auth=NoAuth(), max_body_size=1 << 20, queue_name=QUEUE,
                actor_name="wa.dispatch", enqueue_timeout=1.0)  # fmt: skip
    out = []
    for i in range(events):
        job = core.finish({}, delivery(i % conversations, i // conversations))
        out.append((job.message_id, job.data))
    return out


def stock_messages(events: int) -> list[tuple[str, bytes]]:
    out = []
    now = int(time.time() * 1000)
    for _ in range(events):
        mid = str(uuid.uuid4())
        data = json.dumps(
            {
                "queue_name": QUEUE,
                "actor_name": "noop",
                "args": [],
                "kwargs": {},
                "options": {"redis_message_id": mid},
                "message_id": mid,
                "message_timestamp": now,
            }
        ).encode()
        out.append((mid, data))
    return out


def drained(client: redis.Redis, namespace: str) -> bool:
    full = f"{namespace}:{QUEUE}"
    return int(client.hlen(f"{full}.msgs")) == 0 and int(client.hlen(f"{full}.DQ.msgs")) == 0


def run_case(name: str, url: str, events: int, conversations: int, threads: int) -> dict[str, Any]:
    namespace = f"wa-bench-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(url)
    env = dict(
        os.environ,
        WA_BROKER_URL=url,
        WA_NAMESPACE=namespace,
        PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("WA_BENCH_CODE"), str(ROOT)])),
    )
    if name == "stock-noop":
        preload(client, namespace, stock_messages(events))
        args = [sys.executable, "-m", "dramatiq", "benchmarks.stock_app", "-p", "1", "-t", str(threads), "-Q", QUEUE]
    else:
        env["WA_BENCH_ORDERED"] = "1" if name == "wa-ordered" else "0"
        preload(client, namespace, wa_messages(events, conversations))
        args = [sys.executable, "-m", "wa_middleware.cli", "worker", "benchmarks.ordering_app:wa",
                "--processes", "1", "--threads", str(threads)]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, env=env, cwd=os.environ.get("WA_BENCH_CODE") or ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # Start the clock when the first message is taken, so process start-up is not counted.
        full = f"{namespace}:{QUEUE}"
        while int(client.llen(full)) == events and proc.poll() is None:
            time.sleep(0.002)
        started = time.perf_counter()
        cpu_start = tree_cpu_seconds(proc.pid)
        deadline = started + 600
        while not drained(client, namespace):
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"{name}: worker exited or timed out")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        cpu = tree_cpu_seconds(proc.pid) - cpu_start
    finally:
        proc.terminate()
        proc.wait(30)
        keys = list(client.scan_iter(f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    return {
        "case": name,
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
        "cpu_seconds": round(cpu, 3),
        # Wall-clock figures depend on what else runs on the machine; per CPU second they do much less.
        "events_per_cpu_s": round(events / cpu) if cpu else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--conversations", default="20,1", help="comma-separated: one run per count")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cases", default="stock-noop,wa-unordered,wa-ordered")
    parser.add_argument(
        "--code",
        default="",
        help="comma-separated checkouts whose worker to run, interleaved round by round (default: this one), "
        "e.g. --code .,/tmp/before to compare a change with the code before it",
    )
    args = parser.parse_args(argv)
    url = os.environ.get("WA_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    codes = [os.environ.get("WA_BENCH_CODE", "")]
    if args.code:
        codes = [str(Path(c).resolve()) for c in args.code.split(",")]
    results = []
    runs = []
    for case in args.cases.split(","):
        counts = [int(c) for c in args.conversations.split(",")] if case != "stock-noop" else [0]
        runs += [(case, count) for count in counts]
    for round_no in range(args.repeat):
        for code in codes:
            os.environ["WA_BENCH_CODE"] = code
            for case, conversations in runs:
                result = run_case(case, url, args.events, max(conversations, 1), args.threads)
                result.update(conversations=conversations or None, round=round_no, code=code or str(ROOT))
                print(
                    f"{result['case']:>14} ({conversations or '-':>3} conv.){f' [{code}]' if len(codes) > 1 else ''}: "
                    f"{result['events_per_s']:>6} events/s wall, "
                    f"{result['events_per_cpu_s']:>6} events per CPU-second ({result['seconds']} s)",
                    flush=True,
                )
                results.append(result)
    summary = ratios(results)
    for line in summary:
        print(line["text"])
    out = HERE / "results" / f"ordering-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    meta = {"threads": args.threads, "cpus": os.cpu_count(), "python": sys.version, "load": os.getloadavg()}
    out.write_text(json.dumps({"meta": meta, "results": results, "ratios": summary}, indent=1))
    print(f"wrote {out}")
    return 0


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ordered / unordered per CPU-second, round by round (the machine's speed drifts between rounds,
    much less within one), for each code and conversation count that has both: the ratios and their
    median."""
    by: dict[tuple[str, int | None, str], dict[int, int]] = {}
    for r in results:
        if r["events_per_cpu_s"]:
            by.setdefault((r["code"], r["conversations"], r["case"]), {})[r["round"]] = r["events_per_cpu_s"]
    out = []
    for (code, conversations, case), ordered in sorted(by.items(), key=str):
        unordered = by.get((code, conversations, "wa-unordered"))
        if case != "wa-ordered" or not unordered:
            continue
        found = [ordered[n] / unordered[n] for n in sorted(ordered) if n in unordered]
        if not found:
            continue
        found.sort()
        median = (found[(len(found) - 1) // 2] + found[len(found) // 2]) / 2
        text = (
            f"ordered / unordered, {conversations} conv. [{code}]: median {median:.2f} over {len(found)} rounds "
            f"({found[0]:.2f}-{found[-1]:.2f})"
        )
        out.append({"code": code, "conversations": conversations, "ratios": found, "median": median, "text": text})
    return out


if __name__ == "__main__":
    sys.exit(main())
