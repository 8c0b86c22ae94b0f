"""A Django project whose WhatsApp callbacks use the ORM.

Mounted from outside Django, in its own entry points (Django's ``MIDDLEWARE`` setting is for
Django middleware, not WSGI or ASGI middleware):

    python examples/recipes/django_bot/manage.py migrate
    gunicorn examples.recipes.django_bot.wsgi:application                    # WSGI
    uvicorn examples.recipes.django_bot.asgi:application --lifespan off      # or ASGI
    wa-middleware worker examples.recipes.django_bot.worker:wa               # the callbacks

``worker.py`` is the worker's entry: it sets Django up before the callbacks' module (which
imports the models) is loaded. Pointing the worker at ``hooks:wa`` directly fails with
``ImproperlyConfigured`` / ``AppRegistryNotReady``.
"""
