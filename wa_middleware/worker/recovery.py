"""Bounded recovery of a killed worker's messages.

dramatiq's Redis broker requeues the unacked messages of a worker whose heartbeat is older than
``heartbeat_timeout`` only during a "maintenance" pass, which runs on a random 0.1 % of its
commands: on a quiet queue that can take hours. And a worker heartbeats only when it fetches, so
one whose threads are all busy with long callbacks can look dead. This middleware runs a thread
in every worker process that, every ``heartbeat_timeout / 6``, records the heartbeat and runs a
maintenance pass on the webhook's queue and delay queue. A killed worker's messages are then back
on the queue at most ``heartbeat_timeout * 7 / 6`` after its last heartbeat.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from dramatiq.common import dq_name
from dramatiq.middleware import Middleware

from ._dramatiq import maintain

__all__ = ["Recovery"]

logger = logging.getLogger("wa_middleware.worker")


class Recovery(Middleware):
    """Heartbeat and maintenance thread of a worker process.

    :param queue_name: the queue (its delay queue is maintained too).
    """

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(broker,), name="wa-middleware-recovery", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # Heartbeats go on while the worker finishes its current messages, stopped only after.
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self, broker: Any) -> None:
        interval = max(broker.heartbeat_timeout / 6000, 0.1)
        self._stop.wait(random.uniform(0, interval / 2))
        while not self._stop.is_set():
            try:
                self.tick(broker)
            except Exception as exc:  # Redis down: the next tick tries again
                logger.warning("wa-middleware: heartbeat/maintenance failed: %s", type(exc).__name__)
            self._stop.wait(interval)

    def tick(self, broker: Any) -> None:
        """One heartbeat and one maintenance pass on the queue and its delay queue."""
        for queue_name in (self.queue_name, dq_name(self.queue_name)):
            maintain(broker, queue_name)
