from flask import Flask, request
from hooks import wa
from wa_middleware.adapters.wsgi import WebhookMiddleware

app = Flask(__name__)
app.wsgi_app = WebhookMiddleware(app.wsgi_app, webhook=wa)  # type: ignore[method-assign]


@app.route("/")
def home() -> str:
    return "home"


@app.route("/echo", methods=["POST"])
def echo() -> dict[str, str]:
    return {"body": request.get_data(as_text=True)}
