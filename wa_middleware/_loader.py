"""Import the object a ``MODULE:ATTR`` spec names (the worker's and the command line's entry)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from .errors import ConfigurationError

__all__ = ["import_object"]


def import_object(spec: str, path: Sequence[str] = ()) -> object:
    """Import ``"package.module:attr"`` with ``path`` (then the current directory) on ``sys.path``.

    :raises ConfigurationError: for a malformed spec, a module that cannot be imported or a missing
        attribute, with what to check.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:ATTR (e.g. myapp.hooks:wa), got {spec!r}")
    for entry in reversed([*path, os.getcwd()]):
        entry = os.path.abspath(entry)
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigurationError(
                f"cannot import {module_name!r}: no module named {exc.name!r} on the import path "
                f"(run from your project's folder, or pass --path DIR)"
            ) from None
        raise
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj
