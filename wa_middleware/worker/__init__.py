"""The worker side: the only part of the package that imports dramatiq.

``wa-middleware worker MODULE:ATTR`` sets ``WA_MIDDLEWARE_APP`` (and ``WA_MIDDLEWARE_PATH``) and
hands over to dramatiq's own command line, whose worker processes call `setup`: it imports the
user's module, installs the msgspec encoder and uses the webhook's broker. ``dramatiq
wa_middleware.worker:setup`` works the same way.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, cast

import dramatiq

from .._loader import import_object
from ..errors import ConfigurationError
from .encoder import install
from .watchdog import Watchdog

__all__ = ["ENV_APP", "ENV_PATH", "EXIT_HALTED", "WorkerApp", "load_app", "setup"]

ENV_APP = "WA_MIDDLEWARE_APP"
ENV_PATH = "WA_MIDDLEWARE_PATH"

#: Exit code of a worker that stopped itself (see `lease.Lease.halt`).
EXIT_HALTED = 70


class WorkerApp(Protocol):
    """What a worker needs of the object ``MODULE:ATTR`` names: a `Webhook` is one."""

    @property
    def broker(self) -> Any: ...


def load_app(spec: str, path: tuple[str, ...] = ()) -> WorkerApp:
    """Import ``"package.module:attr"`` and return the webhook it names."""
    obj = import_object(spec, path)
    # Checked on the class: reading ``broker`` on the instance would build it.
    if not hasattr(type(obj), "broker") or not hasattr(type(obj), "on_message"):
        raise ConfigurationError(f"{spec} is a {type(obj).__name__}, not a wa_middleware.Webhook")
    return cast("WorkerApp", obj)


def setup() -> None:
    """Called by dramatiq's CLI in every worker process: set the encoder and the broker."""
    spec = os.environ.get(ENV_APP)
    if not spec:
        raise ConfigurationError(f"set {ENV_APP}=MODULE:ATTR (wa-middleware worker does it for you)")
    path = tuple(p for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p)
    webhook = load_app(spec, path)
    install()
    broker = webhook.broker
    lease = broker.dispatcher.lease
    lease.preflight()
    # Ordered callbacks never run without the process that kills this one before its lease can be
    # taken over (watchdog.py): one that cannot start fails the start too.
    watchdog = Watchdog(lease.timeout, on_broken=lease.halt)
    watchdog.start()
    lease.watchdog = watchdog
    lease.heartbeat()  # a recovery that cannot run fails the start, not a later warning
    # A worker that must stop (Redis lost its data, an evicting memory policy) exits: dramatiq's
    # main process then stops the other workers and exits with this code.
    lease.on_halt = lambda reason: os._exit(EXIT_HALTED)
    dramatiq.set_broker(broker)
