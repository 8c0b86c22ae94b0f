"""An ordinary Flask app wrapped by the webhook middleware.

python examples/flask_app.py            # app + in-process workers on the embedded broker
gunicorn --threads 8 examples.flask_app:app   # production; workers run separately
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask
from wa_middleware.adapters.wsgi import WebhookMiddleware

from examples.callbacks import wa

app = Flask(__name__)
app.wsgi_app = WebhookMiddleware(app.wsgi_app, webhook=wa)  # type: ignore[method-assign]


@app.route("/")
def home() -> dict[str, str]:
    return {"shop": "open"}


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    wa.dev = True
    run_simple("127.0.0.1", int(os.environ.get("PORT", "8000")), app, threaded=True)
