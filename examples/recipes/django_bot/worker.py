"""The worker's entry: ``wa-middleware worker examples.recipes.django_bot.worker:wa``.

Sets Django up (settings, app registry, models) in each worker process, then loads the callbacks.
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.recipes.django_bot.settings")
django.setup()

from examples.recipes.django_bot.hooks import wa  # noqa: E402

__all__ = ["wa"]
