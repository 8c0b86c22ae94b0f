#!/usr/bin/env bash
# One command: create .venv, install wa-middleware with the embedded broker and the example
# frameworks, start examples/fastapi_app.py, post sample deliveries, show the callbacks' output.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" "embedded,examples"
cd "$ROOT"
exec "$VENV/bin/python" examples/demo.py
