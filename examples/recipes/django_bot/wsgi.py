"""WSGI entry: ``gunicorn examples.recipes.django_bot.wsgi:application``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application
from wa_middleware.adapters.wsgi import WebhookMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.recipes.django_bot.settings")
django_application = get_wsgi_application()  # sets Django up: the callbacks' models can load now

from examples.recipes.django_bot.hooks import wa  # noqa: E402

# Around Django, not in its MIDDLEWARE: deliveries never reach Django's URL resolver.
application = WebhookMiddleware(django_application, webhook=wa)
