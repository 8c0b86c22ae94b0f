"""When a failed call is tried again, and when it gives up: inside a time budget, never past it.

A callback runs under the worker's time limit, so every call has a budget (seconds, over all its
attempts, their waits and the shared rate limit's queueing): an attempt's timeout is cut to what
remains of it, and a wait that would end past it is not made. The error is raised instead, still
marked retryable, and the worker's own retry of the callback takes over, later, outside it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigurationError
from .errors import MessagingError, TransportError

__all__ = ["Attempts", "Retry"]


@dataclass(frozen=True)
class Retry:
    """How a call is retried (429, 5xx, throttling codes, connections that failed to open).

    :param attempts: tries in all, the first included.
    :param budget: seconds one call may take in all: attempts, backoff, ``Retry-After`` waits and
        rate-limit queueing. Keep it well below the worker's time limit.
    :param backoff: the first wait, seconds; it doubles with each retry (with jitter), up to
        ``max_backoff``. A ``Retry-After`` answer is honoured instead, even above ``max_backoff``,
        as long as it fits the budget.
    :param max_backoff: the longest wait between two attempts when the API named none.
    :param media_attempts: tries of media calls (upload, look up, download): 360dialog blocks a
        number's media look-ups for an hour after five failed media requests in an hour.
    """

    attempts: int = 5
    budget: float = 30.0
    backoff: float = 0.25
    max_backoff: float = 8.0
    media_attempts: int = 2

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.media_attempts < 1:
            raise ConfigurationError("attempts must be at least 1")
        if self.budget <= 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ConfigurationError("budget must be positive, backoff and max_backoff not negative")


class Attempts:
    """The retry state of one call: how many tries were made and when its budget ends.

    :param policy: the retry policy.
    :param limit: tries allowed (the policy's ``attempts`` when None).
    :param budget: seconds for the whole call, when less than the policy's ``budget``.
    :param clock: a monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        policy: Retry,
        *,
        limit: int | None = None,
        budget: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.limit = limit if limit is not None else policy.attempts
        self.clock = clock
        self.jitter = jitter
        # A call's own budget can only tighten the policy's (a callback's remaining time limit).
        self.deadline = clock() + (policy.budget if budget is None else min(budget, policy.budget))
        self.made = 0

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def timeout(self, default: float) -> float:
        """The timeout of the next attempt: ``default``, cut to what remains of the budget."""
        return max(0.001, min(default, self.remaining()))

    def queueing_allowance(self, timeout: float) -> float:
        """How long the next attempt may wait for a rate-limit slot, leaving time for the request itself."""
        remaining = self.remaining()
        return max(0.0, remaining - min(timeout, remaining / 2))

    def delay_after(self, error: MessagingError, *, sends: bool) -> float | None:
        """Seconds to wait before trying again after ``error``; None to give up and raise it.

        :param sends: the call sends a message: one that may have reached the API is never re-sent here.
        """
        if not error.retryable:
            return None
        if sends and isinstance(error, TransportError) and error.maybe_sent:
            return None
        if self.made >= self.limit:
            return None
        asked: float | None = getattr(error, "retry_after", None)
        if asked is not None:
            delay = asked
        else:
            step = min(self.policy.max_backoff, self.policy.backoff * 2 ** max(0, self.made - 1))
            delay = step * (0.5 + 0.5 * self.jitter())  # jitter: workers throttled together spread out
        if self.clock() + delay >= self.deadline:
            return None
        return delay
