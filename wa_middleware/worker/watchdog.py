"""A process beside each worker process that SIGKILLs it before its lease can be taken over while one of
its ordered callbacks is in flight.

Why a second process: a worker process that stops in the middle of an ordered callback (SIGSTOP, a
callback holding the GIL, a network that stopped answering) cannot stop that callback itself. Once its
heartbeat is ``recovery_timeout`` old on Redis's clock another worker takes its lease over and runs the
unit again; if the first process then went on, two runs of one conversation's ordered callback would
overlap. Only a process that is not frozen with the worker can act first. The watchdog runs in a
session of its own (a Ctrl-Z, or a SIGSTOP of the worker's process group, does not stop it), and kills
the worker ``KILL_AT * recovery_timeout`` after the send of the last heartbeat that landed, if an
ordered callback is in flight then. Killing is what makes a rerun safe: the unit runs again on another
worker (at least once, as after any kill), but never while the first run still goes on.

The margin: Redis timestamps a heartbeat after it was sent, so no takeover can come before
``sent + recovery_timeout`` (a rate that both clocks share; their offsets do not matter). The kill at
``sent + 0.8 * recovery_timeout`` leaves ``0.2 * recovery_timeout`` (6 s with the default) for the
watchdog, which looks every `STEP` seconds, to act. An ordered callback starts only while at least
``0.1 * recovery_timeout`` is left before that kill (`START_BY`): otherwise the worker heartbeats
first, unarmed, so a slow Redis delays a callback instead of killing the process.

What they share: 16 bytes of shared memory (a memfd), where the worker keeps the CLOCK_MONOTONIC time
in nanoseconds after which it must die (0: nothing in flight) and its bitwise complement, so that a
read torn by a concurrent write is seen as such and skipped. Python's ``time.monotonic_ns()`` is that
clock, system-wide on Linux, so both processes read the same time. A store there costs no system call
and wakes nobody: an ordered callback pays two of them, not two pipe writes and two wake-ups. A pipe
tells the watchdog that its worker lives: the worker never writes to it, and its end closing (the
worker exited, however) is EOF. The watchdog also ends when its parent changes, says once on a second
pipe that it runs (the worker waits for that before taking work), and ignores SIGTERM, SIGINT and
SIGHUP: a supervisor stopping every process of a group must not leave the worker's last callbacks
without it.

This file runs as a script (``python -I -S watchdog.py``), so it imports only the standard library:
the watchdog is a bare interpreter (about 13 MB resident), not a copy of the worker's imports.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

__all__ = ["KILL_AT", "START_BY", "STEP", "Watchdog", "WatchdogError", "watch"]

logger = logging.getLogger("wa_middleware.worker")

#: The kill comes this fraction of ``recovery_timeout`` after the send of the last heartbeat that landed.
KILL_AT = 0.8
#: An ordered callback starts only before this fraction of ``recovery_timeout`` after that send.
START_BY = 0.7
#: The longest the watchdog sleeps between two looks at the clock, in seconds.
STEP = 0.1
#: Seconds the worker waits for a new watchdog to say it runs.
START_TIMEOUT = 10.0

#: The shared state: the deadline (monotonic ns, 0 for none) and its bitwise complement.
_STATE = struct.Struct("=qq")


class WatchdogError(RuntimeError):
    """The watchdog cannot run: ordered callbacks must not run without it."""


def store(mem: mmap.mmap | bytearray, deadline_ns: int) -> None:
    """Write the deadline (0: none) into the shared state."""
    _STATE.pack_into(mem, 0, deadline_ns, ~deadline_ns)


def load(mem: mmap.mmap | bytes | bytearray) -> int | None:
    """The deadline in the shared state; None if the read was torn by a write (read again later)."""
    deadline_ns, check = _STATE.unpack_from(mem, 0)
    return int(deadline_ns) if check == ~deadline_ns else None


class Watchdog:
    """The worker process's side of its watchdog: counts the ordered callbacks in flight and keeps the
    deadline the watchdog process acts on.

    :param timeout: the lease's ``recovery_timeout``, in seconds.
    :param on_broken: called with the reason when the watchdog died and cannot be started again (the
        worker entry halts the process: ordered callbacks must not go on unguarded).
    """

    def __init__(self, timeout: float, *, on_broken: Callable[[str], None] | None = None) -> None:
        self.timeout = timeout
        self.on_broken = on_broken
        #: How many times the watchdog process was started again after it died.
        self.restarts = 0
        self._lock = threading.Lock()
        self._in_flight = 0
        self._sent = -math.inf  # monotonic send time of the last heartbeat that landed
        self._proc: subprocess.Popen[bytes] | None = None
        self._mem: mmap.mmap | None = None
        self._alive: int | None = None  # our end of the pipe whose EOF tells it we are gone
        self._broken: str | None = None

    @property
    def pid(self) -> int | None:
        """The watchdog process's id (None when it does not run)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _deadline_ns(self) -> int:
        return int((self._sent + KILL_AT * self.timeout) * 1e9)

    # -- the process -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watchdog process and wait until it runs.

        :raises WatchdogError: it did not start (the worker must not start either).
        """
        with self._lock:
            self._start()

    def _start(self) -> None:
        shared = _shared_fd()
        os.ftruncate(shared, _STATE.size)
        mem = mmap.mmap(shared, _STATE.size)
        store(mem, self._deadline_ns() if self._in_flight else 0)  # a restart while armed: armed at once
        alive_read, alive_write = os.pipe()
        ready_read, ready_write = os.pipe()
        passed = (shared, alive_read, ready_write)
        try:
            proc = subprocess.Popen(
                [sys.executable, *_script(), str(os.getpid()), *map(str, passed), repr(self.timeout)],
                pass_fds=passed,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            mem.close()
            os.close(alive_write)
            os.close(ready_read)
            raise WatchdogError(f"cannot start the watchdog process: {exc}") from None
        finally:
            for fd in passed:
                os.close(fd)
        try:
            readable, _, _ = select.select([ready_read], [], [], START_TIMEOUT)
            ready = bool(readable) and os.read(ready_read, 1) == b"1"
        finally:
            os.close(ready_read)
        if not ready:
            proc.kill()
            code = proc.wait()
            mem.close()
            os.close(alive_write)
            raise WatchdogError(f"the watchdog process did not start (exit code {code})")
        self._proc, self._mem, self._alive = proc, mem, alive_write

    def check(self) -> None:
        """Start the watchdog again if it died (called at every heartbeat of the recovery thread)."""
        with self._lock:
            proc = self._proc
            code = proc.poll() if proc is not None else None
            if code is not None:
                self._restart(f"the watchdog process exited (code {code})")
        self._report()

    def close(self) -> None:
        """Close our end of the pipe; the watchdog process then exits (on its own, within `STEP`)."""
        with self._lock:
            proc, alive, mem = self._proc, self._alive, self._mem
            self._proc = self._alive = self._mem = None
        if alive is not None:
            os.close(alive)
        if mem is not None:
            mem.close()
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _restart(self, why: str) -> None:
        """Replace a watchdog that died (under the lock)."""
        logger.error("wa-middleware: %s; starting it again", why)
        if self._proc is not None:
            self._proc.wait()
        if self._alive is not None:
            os.close(self._alive)
        if self._mem is not None:
            self._mem.close()
        self._proc = self._alive = self._mem = None
        try:
            self._start()
        except WatchdogError as exc:
            self._broken = f"{why}, and {exc}: ordered callbacks cannot run safely"
            return
        self.restarts += 1

    def _report(self) -> None:
        """Tell ``on_broken`` (outside the lock) that the watchdog cannot run."""
        if self._broken is None:
            return
        with self._lock:
            broken, self._broken = self._broken, None
        if broken is not None:
            logger.critical("wa-middleware: %s", broken)
            if self.on_broken is not None:
                self.on_broken(broken)

    def _store(self, deadline_ns: int) -> None:
        if self._mem is not None:
            store(self._mem, deadline_ns)

    # -- what the worker tells it ----------------------------------------------------------------

    def landed(self, sent: float) -> None:
        """A heartbeat sent at monotonic time ``sent`` landed: while armed, the kill moves on."""
        with self._lock:
            if sent <= self._sent:
                return
            self._sent = sent
            if self._in_flight:
                self._store(self._deadline_ns())

    def enter(self) -> bool:
        """An ordered callback is about to start: arm the watchdog, then check that the last heartbeat
        leaves time to start it. False: not armed; heartbeat, then try again.

        The check that counts comes after the deadline is stored: a stop anywhere after it, before or
        during the callback, is covered; a stop before it makes it fail.

        :raises WatchdogError: the watchdog does not run.
        """
        with self._lock:
            if self._mem is None:
                raise WatchdogError("the watchdog does not run: ordered callbacks cannot run safely")
            start_by = self._sent + START_BY * self.timeout
            if time.monotonic() >= start_by:
                return False  # not even armed: the deadline would be past already
            self._in_flight += 1
            if self._in_flight == 1:
                self._store(self._deadline_ns())
            if time.monotonic() < start_by:
                return True
            self._leave()
            return False

    def leave(self) -> None:
        """An ordered callback ended (or did not start)."""
        with self._lock:
            self._leave()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._store(0)

    def fenced(self) -> None:
        """The lease was taken over: an ordered callback still in flight now overlaps its rerun elsewhere
        (the watchdog did not act: it was frozen too, or not running). End it now."""
        if self._in_flight:
            logger.critical(
                "wa-middleware: this worker process was presumed dead while %d ordered callback(s) ran: "
                "killing it, so that they stop while their units run elsewhere",
                self._in_flight,
            )
            os.kill(os.getpid(), signal.SIGKILL)


def _shared_fd() -> int:
    """A file descriptor of memory to share with the watchdog (a memfd where there is one)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("wa-middleware-watchdog", os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix="wa-middleware-watchdog-")
    os.unlink(path)
    return fd


def _script() -> list[str]:
    """How to run this file: as a script by its path (no package imports), else as a module."""
    if os.path.isfile(__file__):
        return ["-I", "-S", __file__]
    return ["-m", "wa_middleware.worker.watchdog"]


# -- the watchdog process ---------------------------------------------------------------------------


def watch(pid: int, shared: int, alive: int, timeout: float, *, step: float = STEP) -> str:
    """Watch worker ``pid``: its deadline in the shared memory ``shared``, its life on the pipe ``alive``.

    :returns: why it stopped watching: ``"eof"`` (the worker's end of the pipe closed: it exited),
        ``"orphaned"`` (its parent is no longer ``pid``) or ``"killed"`` (it sent SIGKILL to ``pid``).
    """
    mem = mmap.mmap(shared, _STATE.size, access=mmap.ACCESS_READ)
    os.set_blocking(alive, False)
    deadline = 0
    while True:
        wait = step if not deadline else min(step, max(0.0, (deadline - time.monotonic_ns()) / 1e9))
        time.sleep(wait)
        try:
            if os.read(alive, 1) == b"":
                return "eof"
        except BlockingIOError:  # nothing to read, and never will be: the worker lives
            pass
        if os.getppid() != pid:  # the worker is gone (and its pid may be someone else's soon)
            return "orphaned"
        found = load(mem)
        if found is not None:  # else torn by a write: the last one read still holds
            deadline = found
        now = time.monotonic_ns()
        if deadline and now >= deadline:
            since = (now - deadline) / 1e9 + KILL_AT * timeout
            sys.stderr.write(
                f"wa-middleware watchdog: worker {pid} held an ordered callback without a heartbeat for "
                f"{since:.1f} s: killed, so the unit can move without running twice at once\n"
            )
            sys.stderr.flush()
            os.kill(pid, signal.SIGKILL)
            return "killed"


def main(argv: list[str]) -> int:
    """``watchdog.py PID SHARED_FD ALIVE_FD READY_FD TIMEOUT``: say it runs on READY_FD, then watch."""
    pid, shared, alive, ready = (int(arg) for arg in argv[:4])
    timeout = float(argv[4])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    os.write(ready, b"1")
    os.close(ready)
    watch(pid, shared, alive, timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
