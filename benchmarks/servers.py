"""Starting, probing and stopping the processes a benchmark run needs.

Every server runs in its own session (process group), so a stop or a ``kill -9`` reaches
gunicorn's and dramatiq's child processes too, and nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from .contenders import Contender
from .payloads import auth_header, make_deliveries, signature_header

__all__ = [
    "RedisServer",
    "ServerProcess",
    "WorkerProcess",
    "free_port",
    "process_cpu_seconds",
    "process_tree",
    "project_root",
]


def project_root() -> Path:
    """The directory that holds the ``benchmarks`` package: the servers import from it."""
    return Path(__file__).resolve().parent.parent


def free_port(lo: int, hi: int) -> int:
    """The first port in ``[lo, hi]`` nothing listens on."""
    for port in range(lo, hi + 1):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds process ``pid`` has used so far, all its threads together.

    The kernel's own per-process CPU clock (what ``clock_getcpuclockid(pid)`` names: ``(~pid << 3) |
    CPUCLOCK_SCHED``), exact to the nanosecond; the utime + stime ticks of ``/proc/PID/stat`` are
    10 ms samples, too coarse for a few thousand requests of a few hundred microseconds each.
    """
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:  # not Linux, or not ours to read: fall back to the ticks
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its living descendants (a gunicorn master and its workers), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its living descendants (a process that ended is lost)."""
    total = 0.0
    for each in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process gone meanwhile
            total += process_cpu_seconds(each)
    return total


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class RedisServer:
    """A private ``redis-server`` for the run: the benchmark never touches anyone else's data.

    :param appendfsync: ``always`` makes the 200 of a durable contender mean "on disk", as
        wa-middleware's embedded server does; ``everysec`` / ``no`` are there to measure the cost.
    """

    def __init__(self, port: int, appendfsync: str = "always") -> None:
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            raise RuntimeError("redis-server (or valkey-server) is not on PATH; pass --redis-url instead")
        self.port = port
        self.appendfsync = appendfsync
        self.url = f"redis://127.0.0.1:{port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="wabench-redis-")
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", self._dir.name, "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", appendfsync, "--logfile", "redis.log"]
        self.flags = args[1:]
        self.version = ""
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.version = str(client.info("server")["redis_version"])
                break
            except redis.RedisError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
        client.close()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self) -> None:
        _stop_group(self._proc)
        self._dir.cleanup()


class ServerProcess:
    """One contender served by its real server (uvicorn or gunicorn), on its own port."""

    def __init__(self, contender: Contender, port: int, env: dict[str, str], log_dir: Path) -> None:
        self.contender = contender
        self.port = port
        self.env = env
        self.log_path = log_dir / f"{contender.name}.log"
        self.command = contender.command(port)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.command,
                cwd=project_root(),
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until a real delivery gets a 200: gunicorn accepts connections before its workers run."""
        body = make_deliveries(1, seed=99)[0].body
        request = (
            f"POST {self.contender.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: {auth_header()}\r\nX-Hub-Signature-256: {signature_header()}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"{self.contender.name} exited with {self._proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(request)
                    answer = s.recv(64)
                if answer.startswith(b"HTTP/1.1 200") or answer.startswith(b"HTTP/1.0 200"):
                    return
                last = answer[:32].decode("latin-1", "replace")
            except OSError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        raise RuntimeError(f"{self.contender.name} not ready after {timeout} s ({last}); see {self.log_path}")

    def cpu_seconds(self) -> float:
        """CPU seconds the server (every process of it) has used so far; 0 when it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            return 0.0
        return tree_cpu_seconds(self._proc.pid)

    def kill9(self) -> None:
        """``kill -9`` the whole server, as a crash or an OOM kill would; `reap` collects it."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is not None:
            _stop_group(self._proc)


class WorkerProcess:
    """A worker command (``wa-middleware worker`` or stock ``dramatiq``) in its own process group."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = [sys.executable, *args]
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.args,
                cwd=project_root(),
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The command's first process (dramatiq's master; its worker processes are its children)."""
        return self._proc.pid

    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self) -> None:
        # dramatiq's master stops its children on SIGTERM and waits for in-flight messages.
        _stop_group(self._proc, timeout=15)
