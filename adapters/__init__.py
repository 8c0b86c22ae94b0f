"""Thin adapters that mount the webhook core in ASGI and WSGI applications."""
