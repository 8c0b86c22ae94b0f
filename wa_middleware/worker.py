"""Boot module for dramatiq worker processes: ``dramatiq wa_middleware.worker:setup``.

``wa-middleware worker MODULE:ATTR`` sets ``WA_MIDDLEWARE_APP`` and hands over to dramatiq's
own command line, whose worker processes import this module, load the `Webhook`, install the
msgspec encoder and use the webhook's broker.
"""

from __future__ import annotations

import importlib
import os
import sys

import dramatiq

from .encoder import install
from .errors import ConfigurationError
from .webhook import Webhook

__all__ = ["load_webhook", "setup"]

ENV_APP = "WA_MIDDLEWARE_APP"


def load_webhook(spec: str) -> Webhook:
    """Import ``"package.module:attr"`` and return the `Webhook` it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:ATTR, got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Webhook):
        raise ConfigurationError(f"{spec} is a {type(obj).__name__}, not a wa_middleware.Webhook")
    return obj


def setup() -> None:
    """Called by dramatiq's CLI in every worker process: set the encoder and the broker."""
    spec = os.environ.get(ENV_APP)
    if not spec:
        raise ConfigurationError(f"set {ENV_APP}=MODULE:ATTR (wa-middleware worker does it for you)")
    webhook = load_webhook(spec)
    install()
    dramatiq.set_broker(webhook.broker)
