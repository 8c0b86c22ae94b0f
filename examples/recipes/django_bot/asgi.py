"""ASGI entry: ``uvicorn examples.recipes.django_bot.asgi:application --lifespan off``.

Django's ASGI handler refuses the ``lifespan`` scope (``ValueError: Django can only handle
ASGI/HTTP connections, not lifespan.``), which the middleware passes through untouched:
``--lifespan off`` keeps uvicorn from trying (its default ``auto`` tries once, logs that lifespan
is unsupported, and goes on).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application
from wa_middleware.adapters.asgi import WebhookMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.recipes.django_bot.settings")
django_application = get_asgi_application()  # sets Django up: the callbacks' models can load now

from examples.recipes.django_bot.hooks import wa  # noqa: E402

application = WebhookMiddleware(django_application, webhook=wa)
