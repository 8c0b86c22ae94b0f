"""The plain configuration records the two sides share, validated once by `Webhook`.

The facade (`wa_middleware.webhook.Webhook`) builds these and hands each part the small object it
needs: the worker gets `WorkerSettings` and a `KeyLayout`, the tooling gets a `BrokerLink`. None of
them imports the facade back, which is what keeps the import graph free of cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .keys import KeyLayout

__all__ = ["BrokerLink", "WorkerSettings"]


class BrokerLink(Protocol):
    """Where a webhook's broker is and how its keys are named: all that tooling needs of it.

    A `Webhook` is one (its ``broker_url`` starts the embedded server on first use when none is
    configured); so is anything else with these two attributes.
    """

    @property
    def broker_url(self) -> str: ...

    @property
    def keys(self) -> KeyLayout: ...


@dataclass(frozen=True)
class WorkerSettings:
    """How the worker runs callbacks (see `Webhook` for each parameter's meaning and default).

    :ivar name: the webhook's name, prefix of its dramatiq actor names.
    :ivar queue_name: the dramatiq queue.
    :ivar ordered: whether callbacks registered without ``ordered=`` run in conversation order.
    :ivar dedupe_ttl: seconds an event is remembered to run its callbacks once.
    :ivar max_retries: retries of a failing callback before it is dead-lettered.
    :ivar min_backoff: first retry delay, ms (doubles each try, with jitter).
    :ivar max_backoff: longest retry delay, ms.
    :ivar skip_stale_statuses: skip a status ranked below one already handled for the same message.
    :ivar recovery_timeout: seconds without a heartbeat after which a worker counts as dead.
    """

    name: str = "wa"
    queue_name: str = "wa_middleware"
    ordered: bool = False
    dedupe_ttl: float = 7 * 86400
    max_retries: int = 5
    min_backoff: int = 5_000
    max_backoff: int = 3_600_000
    skip_stale_statuses: bool = False
    recovery_timeout: float = 30.0

    @property
    def dispatch_actor(self) -> str:
        """The actor of delivery messages (the request path writes them under this name)."""
        return f"{self.name}.dispatch"

    @property
    def callback_actor(self) -> str:
        """The actor of one (event, callback) unit's own message: retries, lane heads, dead letters."""
        return f"{self.name}.callback"
