"""The recovery thread of a worker process: heartbeat, recovery of dead processes' messages, reconciling.

Every ``recovery_timeout / 6`` it heartbeats on Redis's clock and requeues what processes dead
for longer than ``recovery_timeout`` held (RECOVER, see `lease.py`), then reconciles this process's
acks with what it knows it holds. A killed worker's messages are back on the queue at most
``recovery_timeout * 7 / 6`` after its last heartbeat, on a quiet queue too (dramatiq's own
maintenance runs on a random 0.1 % of its commands).
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from dramatiq.middleware import Middleware

from .lease import Fenced, Lease

__all__ = ["Recovery"]

logger = logging.getLogger("wa_middleware.worker")


class Recovery(Middleware):
    """Heartbeat, recovery and reconciling thread of a worker process.

    :param lease: the process's lease.
    """

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._stop.clear()
        self.lease.stopping.clear()
        self._thread = threading.Thread(target=self._run, name="wa-middleware-recovery", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.lease.stopping.set()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # Heartbeats go on while the worker finishes its current messages, stopped only after.
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        interval = max(self.lease.timeout / 6, 0.1)
        self._stop.wait(random.uniform(0, interval / 2))
        while not self._stop.is_set():
            try:
                self.tick()
            except Fenced:
                pass  # logged by the lease; the next tick registers the new id
            except Exception as exc:  # Redis down: the next tick tries again
                logger.warning("wa-middleware: heartbeat/recovery failed: %s", type(exc).__name__)
            self._stop.wait(interval)

    def tick(self) -> None:
        """One heartbeat with recovery, then reconciling (and the watchdog started again if it died)."""
        if self.lease.watchdog is not None:
            self.lease.watchdog.check()
        self.lease.heartbeat()
        self.lease.reconcile()
