"""Structured logs: one event per line, kv or JSON, and never a secret nor a message body."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops_helpers import free_port, private_redis, wait_port
from wa_middleware import logs

PASSWORD = "s3cr3t-Pw-91"
WRONG = "wr0ng-Pw-17"
BODY_MARKER = "BODY-MARKER-c0ffee"

APP = """
import os
import logging
import wa_middleware.logs
from starlette.responses import PlainTextResponse
from wa_middleware import BasicAuth, Webhook

wa_middleware.logs.configure(format=os.environ["TEST_LOG_FORMAT"], level=logging.DEBUG)
wa = Webhook(
    auth=BasicAuth("user", os.environ["TEST_PASSWORD"]),
    broker_url=os.environ["TEST_BROKER"],
    queue_name=os.environ["TEST_QUEUE"],
)
if os.environ["TEST_KIND"] == "asgi":
    from wa_middleware.adapters.asgi import WebhookMiddleware
    app = WebhookMiddleware(PlainTextResponse("home"), webhook=wa)
else:
    from wa_middleware.adapters.wsgi import WebhookMiddleware

    def inner(environ, start_response):
        start_response("200 OK", [])
        return [b"home"]

    app = WebhookMiddleware(inner, webhook=wa)
"""


def _post(url: str, password: str) -> int:
    body = json.dumps({"object": "whatsapp_business_account", "entry": [], "note": BODY_MARKER}).encode()
    token = base64.b64encode(f"user:{password}".encode()).decode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "redis").mkdir()
    with private_redis(tmp_path / "redis") as url:
        yield url


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("fmt", ["json", "kv"])
def test_no_secret_and_no_body_in_logs(tmp_path: Path, broker: str, kind: str, fmt: str) -> None:
    (tmp_path / "logapp.py").write_text(textwrap.dedent(APP))
    port = free_port()
    env = {
        **os.environ,
        "TEST_BROKER": broker,
        "TEST_QUEUE": f"wa-ops-logs-{uuid.uuid4().hex[:8]}",
        "TEST_KIND": kind,
        "TEST_LOG_FORMAT": fmt,
        "TEST_PASSWORD": PASSWORD,
        "PYTHONPATH": str(tmp_path),
    }
    bindir = Path(sys.executable).parent
    if kind == "asgi":
        argv = [str(bindir / "uvicorn"), "logapp:app", "--port", str(port), "--no-access-log"]
    else:
        argv = [str(bindir / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "logapp:app"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_port(port, 30)
        url = f"http://127.0.0.1:{port}/webhook"
        assert _post(url, WRONG) == 401
        assert _post(url, PASSWORD) == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    text = out.decode() + err.decode()
    ours = [line for line in err.decode().splitlines() if "wa_middleware" in line]
    assert any("webhook rejected" in line for line in ours), text
    assert any("webhook accepted" in line for line in ours), text
    for secret in (
        PASSWORD,
        WRONG,
        BODY_MARKER,
        *(base64.b64encode(f"user:{p}".encode()).decode() for p in (PASSWORD, WRONG)),
    ):
        assert secret not in text
    for line in ours:
        if fmt == "json":
            record = json.loads(line)
            assert record["logger"].startswith("wa_middleware")
        else:
            assert re.match(r"^ts=\S+ level=\w+ logger=wa_middleware\S* event=", line), line
    rejected = next(line for line in ours if "webhook rejected" in line)
    assert "status=401" in rejected or '"status":401' in rejected
    assert "reason=AuthError" in rejected or '"reason":"AuthError"' in rejected


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logs.configure(format="kv", stream=out, logger="wa_middleware.test")
    yield out
    logging.getLogger("wa_middleware.test").removeHandler(handler)


def test_kv_is_one_line_and_redacts(stream: io.StringIO) -> None:
    log = logging.getLogger("wa_middleware.test")
    log.warning(
        "two\nlines",
        extra={"authorization": "Basic abc", "api_key": "k", "body": "hello", "latency": 0.25, "ok": True},
    )
    [line] = stream.getvalue().splitlines()
    assert 'event="two\\nlines"' in line
    assert "authorization=<redacted>" in line and "api_key=<redacted>" in line and "body=<redacted>" in line
    assert "Basic abc" not in line and "hello" not in line
    assert "latency=0.25" in line and "ok=true" in line


def test_json_and_exceptions(stream: io.StringIO) -> None:
    out = io.StringIO()
    logs.configure(format="json", stream=out, logger="wa_middleware.test")  # replaces the kv handler
    log = logging.getLogger("wa_middleware.test")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed", extra={"password": "p4ss"})
    assert stream.getvalue() == ""
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "failed" and record["level"] == "error"
    assert record["password"] == "<redacted>" and record["exc_type"] == "ValueError"
    assert "Traceback" in record["traceback"]


def test_configure_rejects_unknown_format() -> None:
    with pytest.raises(ValueError):
        logs.configure(format="xml")  # type: ignore[arg-type]
