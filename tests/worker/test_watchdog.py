"""The watchdog protocol through real processes: a stand-in worker process (driven line by line on its
stdin) runs the real `Watchdog` and its real watchdog process, which must SIGKILL it when an ordered
callback is in flight past the deadline, and only then; and the shared state's torn reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wa_middleware.worker.watchdog import KILL_AT, START_BY, STEP, load, store

TIMEOUT = 1.0  # recovery_timeout of the stand-in: killed 0.8 s after the last heartbeat's send

# The stand-in worker: one command per line, one answer line per command.
CHILD = """
import os, sys, time
from wa_middleware.worker import watchdog
from wa_middleware.worker.watchdog import Watchdog, WatchdogError

broken = []
dog = Watchdog(float(sys.argv[1]), on_broken=broken.append)
dog.start()
print(dog.pid, flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    out = ""
    if cmd == "landed":  # a heartbeat sent ARG seconds ago landed
        dog.landed(time.monotonic() - float(args[0]))
    elif cmd == "enter":
        try:
            out = str(dog.enter())
        except WatchdogError:
            out = "WatchdogError"
    elif cmd == "unstartable":  # from now on, a new watchdog process exits at once
        watchdog._script = lambda: ["-c", "import sys; sys.exit(3)"]
    elif cmd == "leave":
        dog.leave()
    elif cmd == "check":
        dog.check()
        out = str(dog.pid)
    elif cmd == "close":
        pid = dog.pid
        dog.close()
        out = str(pid)
    elif cmd == "fenced":
        dog.fenced()
    elif cmd == "exit":
        os._exit(0)
    print(out, dog.restarts, ";".join(broken), flush=True)
"""


class StandIn:
    """The stand-in worker process and its watchdog."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, repr(timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.watchdog = int(self.proc.stdout.readline())

    def send(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    child = StandIn()
    yield child
    child.stop()
    gone(child.watchdog, timeout=2)


def alive(pid: int) -> bool:
    """Running (not a zombie, not reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_armed_past_the_deadline_the_worker_is_killed(stand_in: StandIn) -> None:
    """An ordered callback in flight and no heartbeat landing: SIGKILL at KILL_AT x timeout after the
    last landed heartbeat's send (and one STEP of the watchdog's), with its one line on stderr."""
    sent = time.monotonic()
    stand_in.send("landed 0")
    assert stand_in.send("enter").startswith("True")
    code = stand_in.wait(5)
    elapsed = time.monotonic() - sent
    assert code == -signal.SIGKILL
    assert KILL_AT * TIMEOUT - 0.05 <= elapsed <= KILL_AT * TIMEOUT + STEP + 0.3, elapsed
    err = stand_in.stderr()
    assert f"worker {stand_in.proc.pid} held an ordered callback without a heartbeat for 0.8 s: killed" in err
    assert gone(stand_in.watchdog, timeout=2)  # it ends with its worker


def test_a_stopped_worker_is_killed(stand_in: StandIn) -> None:
    """The case it is for: SIGSTOP in the middle of an ordered callback (a stopped process can still be
    SIGKILLed, and the watchdog, in a session of its own, is not stopped with it)."""
    stand_in.send("landed 0")
    stand_in.send("enter")
    os.kill(stand_in.proc.pid, signal.SIGSTOP)
    assert stand_in.wait(5) == -signal.SIGKILL


def test_disarmed_the_worker_lives(stand_in: StandIn) -> None:
    stand_in.send("landed 0")
    stand_in.send("enter")
    stand_in.send("leave")
    assert stand_in.wait(3 * TIMEOUT) is None  # far past any deadline: nothing in flight, nothing killed
    assert alive(stand_in.watchdog)


def test_landing_heartbeats_keep_an_armed_worker_alive(stand_in: StandIn) -> None:
    stand_in.send("landed 0")
    stand_in.send("enter")
    until = time.monotonic() + 3 * TIMEOUT
    while time.monotonic() < until:
        stand_in.send("landed 0")
        time.sleep(TIMEOUT / 6)
    assert stand_in.proc.poll() is None
    stand_in.send("leave")


def test_two_in_flight_disarm_only_when_both_left(stand_in: StandIn) -> None:
    stand_in.send("landed 0")
    stand_in.send("enter")
    stand_in.send("enter")
    stand_in.send("leave")  # one still in flight: still armed
    assert stand_in.wait(5) == -signal.SIGKILL


def test_no_start_when_the_last_heartbeat_leaves_no_time(stand_in: StandIn) -> None:
    """Past START_BY the callback does not start (the worker heartbeats first), and nothing is armed."""
    stand_in.send(f"landed {START_BY * TIMEOUT + 0.01}")
    assert stand_in.send("enter").startswith("False")
    assert stand_in.wait(2 * TIMEOUT) is None
    stand_in.send("landed 0")
    assert stand_in.send("enter").startswith("True")
    stand_in.send("leave")


def test_eof_ends_the_watchdog(stand_in: StandIn) -> None:
    """The worker closes its end (it exits): the watchdog exits, by itself, within a STEP."""
    started = time.monotonic()
    assert stand_in.send("close").split()[0] == str(stand_in.watchdog)
    assert time.monotonic() - started < 1.0
    assert not alive(stand_in.watchdog)


def test_a_worker_that_exits_armed_is_not_avenged(stand_in: StandIn) -> None:
    """The worker exits with a callback in flight (its pid may be reused): the watchdog just ends."""
    stand_in.send("landed 0")
    stand_in.send("enter")
    assert stand_in.proc.stdin is not None
    stand_in.proc.stdin.write("exit\n")
    stand_in.proc.stdin.flush()
    assert stand_in.wait(5) == 0
    assert gone(stand_in.watchdog, timeout=1)
    assert "killed" not in stand_in.stderr()


def test_the_watchdog_ignores_sigterm(stand_in: StandIn) -> None:
    """A supervisor's SIGTERM to every process of the group stops the worker, gracefully, not the
    watchdog of its last callbacks: that one ends with the worker."""
    os.kill(stand_in.watchdog, signal.SIGTERM)
    os.kill(stand_in.watchdog, signal.SIGINT)
    os.kill(stand_in.watchdog, signal.SIGHUP)
    time.sleep(0.3)
    assert alive(stand_in.watchdog)


def test_a_dead_watchdog_is_started_again_and_still_kills(stand_in: StandIn) -> None:
    """Killed while armed: the recovery thread's check (at every heartbeat) starts another one, which
    gets the armed deadline at once."""
    stand_in.send("landed 0")
    stand_in.send("enter")
    os.kill(stand_in.watchdog, signal.SIGKILL)
    time.sleep(0.1)
    answer = stand_in.send("check").split()
    assert answer[0] != str(stand_in.watchdog) and answer[1] == "1"  # a new one, one restart
    stand_in.watchdog = int(answer[0])
    assert stand_in.wait(5) == -signal.SIGKILL
    assert "the watchdog process exited (code -9); starting it again" in stand_in.stderr()


def test_a_watchdog_that_cannot_start_again_is_reported(stand_in: StandIn) -> None:
    """``on_broken`` hears of it (the worker entry halts the process then, exit 70), and ordered
    callbacks are refused rather than run unguarded."""
    stand_in.send("landed 0")
    stand_in.send("unstartable")
    os.kill(stand_in.watchdog, signal.SIGKILL)
    time.sleep(0.1)
    answer = stand_in.send("check")
    assert answer.startswith(
        "None 0 the watchdog process exited (code -9), and the watchdog process did not start (exit code 3)"
    )
    assert stand_in.send("enter").startswith("WatchdogError")


def test_fenced_while_armed_kills_itself(stand_in: StandIn) -> None:
    """Presumed dead with an ordered callback in flight (the watchdog was frozen too, a whole VM): the
    process kills itself when it learns it, at its next heartbeat."""
    stand_in.send("landed 0")
    stand_in.send("enter")
    assert stand_in.proc.stdin is not None
    stand_in.proc.stdin.write("fenced\n")
    stand_in.proc.stdin.flush()
    assert stand_in.wait(0.5) == -signal.SIGKILL


def test_fenced_with_nothing_in_flight_goes_on(stand_in: StandIn) -> None:
    stand_in.send("landed 0")
    stand_in.send("fenced")
    assert stand_in.proc.poll() is None


def test_a_torn_read_of_the_shared_state_is_skipped() -> None:
    """The deadline and its complement are written one after the other: a read between the two (a
    write in progress in the other process) is told apart and skipped, never taken for a deadline."""
    mem = bytearray(16)
    store(mem, 0)
    assert load(mem) == 0
    store(mem, 123_456_789_000)
    assert load(mem) == 123_456_789_000
    torn = bytearray(mem)
    store(mem, 987_654_321_000)
    torn[:8] = mem[:8]  # the new deadline beside the old complement
    assert load(bytes(torn)) is None
    torn = bytearray(mem)
    torn[8:] = bytes(16)[8:]
    assert load(bytes(torn)) is None
