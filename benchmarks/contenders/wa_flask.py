"""wa-middleware's WSGI adapter wrapping a Flask app's ``wsgi_app``."""

from __future__ import annotations

from flask import Flask
from wa_middleware.adapters.wsgi import WebhookMiddleware

from ._webhook import wa

flask_app = Flask(__name__)
flask_app.wsgi_app = WebhookMiddleware(flask_app.wsgi_app, webhook=wa)  # type: ignore[method-assign]
app = flask_app

__all__ = ["app", "wa"]
