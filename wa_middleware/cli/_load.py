"""Load the user's `Webhook` for a command, from a ``MODULE:ATTR`` spec."""

from __future__ import annotations

from collections.abc import Sequence

from .._loader import import_object
from ..errors import ConfigurationError
from ..webhook import Webhook

__all__ = ["load_webhook"]


def load_webhook(spec: str, path: Sequence[str] = ()) -> Webhook:
    """Import ``"package.module:attr"`` (``path`` first on the import path) and return its `Webhook`."""
    obj = import_object(spec, path)
    if not isinstance(obj, Webhook):
        raise ConfigurationError(f"{spec} is a {type(obj).__name__}, not a wa_middleware.Webhook")
    return obj
