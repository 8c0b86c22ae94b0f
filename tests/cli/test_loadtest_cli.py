"""``wa-middleware loadtest`` against real uvicorn servers over HTTP and HTTPS (a self-signed
certificate made here), with every auth scheme, the queue report with and without a worker, and
the failures that must end in one line and an exit code, never a traceback."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import free_port, wait_for_port, wait_until
from wa_middleware.cli.loadtest import EXIT_CONNECTION, EXIT_FAIL, EXIT_PASS, EXIT_USAGE, sender_mix
from wa_middleware.keys import KeyLayout
from wa_middleware.ops.loadtest import UNIQUE
from wa_middleware.worker.encoder import MsgpackEncoder

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture
def env(redis_url: str, namespace: str, tmp_path: Path) -> dict[str, str]:
    return {"WA_BROKER_URL": redis_url, "WA_NAMESPACE": namespace, "WA_EVENTS": str(tmp_path / "events.jsonl")}


def loadtest(tmp_path: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run the command as a user would, in ``tmp_path``."""
    done = subprocess.run(
        [sys.executable, "-m", "wa_middleware.cli", "loadtest", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def results(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "results.json").read_text())  # type: ignore[no-any-return]


def stored_bodies(redis_url: str, namespace: str) -> list[bytes]:
    """The delivery bodies waiting in the webhook's queue (no worker runs)."""
    client = redis.Redis.from_url(redis_url)
    try:
        stored = client.hvals(KeyLayout(namespace=namespace).messages)
    finally:
        client.close()
    decode = MsgpackEncoder().decode
    return [bytes(decode(raw)["args"][0]) for raw in stored]


def uvicorn(spawn: Any, app: str, env: dict[str, str], *tls: str) -> int:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning", *tls]
    process = spawn.command(args, **env)
    wait_for_port(port, proc=process.proc)
    return port


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and a certificate for 127.0.0.1, with openssl (skip without it)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a self-signed certificate")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return key, cert


# -- the mix --------------------------------------------------------------------------------


def test_the_mix_follows_the_senders_proportions() -> None:
    bodies = sender_mix(0.75, count=400, run="r1")
    statuses = [b for b in bodies if b'"statuses"' in b]
    assert len(statuses) == 300
    batched = [b for b in statuses if b.count(b'"recipient_id"') > 1]
    assert 10 <= len(batched) <= 20  # one in 20
    assert all(body.count(UNIQUE) >= 1 for body in bodies)
    types = Counter(
        json.loads(b)["entry"][0]["changes"][0]["value"]["messages"][0]["type"] for b in bodies if b not in statuses
    )
    assert len(types) == 8 and types["text"] >= 30  # the interactive replies share one type
    assert b'"failed"' in b"".join(statuses)
    assert sender_mix(0.0, count=10, run="x")[0] != sender_mix(0.0, count=10, run="y")[0]


# -- runs -----------------------------------------------------------------------------------


def test_http_run_against_a_wa_middleware_app(
    spawn: Any, env: dict[str, str], tmp_path: Path, redis_url: str, namespace: str
) -> None:
    port = uvicorn(spawn, "worker_app:app", env)
    out = tmp_path / "run"
    done = loadtest(
        tmp_path, f"http://127.0.0.1:{port}/webhook", "--outgoing", "50", "--incoming", "50",
        "--duration", "3", "--warmup", "0.5", "--basic-auth", "testuser:testpass",
        "--broker-url", redis_url, "--namespace", namespace, "--out", str(out),
    )  # fmt: skip
    assert done.returncode == EXIT_PASS, done.stdout + done.stderr
    assert "200 deliveries/s for 3 s" in done.stdout
    [verdict] = [line for line in done.stdout.splitlines() if line.startswith("verdict:")]
    assert verdict.startswith("verdict: PASS  median ") and "non-200 0  errors 0" in verdict
    assert "(600 requests measured at 200/s)" in verdict
    assert "measuring sent" in done.stderr  # the progress line

    data = results(out)
    summary = data["summary"]
    assert (summary["measured"], summary["ok"], summary["completed"]) == (600, 600, 600)
    assert summary["non_200"] == summary["errors"] == 0 and summary["sent"] == 700
    assert data["verdict"]["passed"] and data["options"]["status_share"] == 0.75
    assert data["options"]["auth"] == ["basic"] and "testpass" not in json.dumps(data)
    assert [row["phase"] for row in data["timeline"]][-1] == "end"
    assert (out / "latency.png").exists() is HAS_MATPLOTLIB

    # No worker runs: every delivery waits in the queue, and the report says so.
    assert "callbacks: did NOT keep up" in done.stdout
    assert data["queue"]["kept_up"] is False and data["queue"]["depth_end"] == 701  # with the probe
    bodies = stored_bodies(redis_url, namespace)
    assert len(bodies) == 701
    ids = [
        item["id"]
        for body in bodies
        for change in json.loads(body)["entry"][0]["changes"]
        for item in change["value"].get("messages", []) + change["value"].get("statuses", [])
    ]
    assert len(ids) == len(set(ids)) > 701  # unique, some deliveries carrying several statuses
    statuses = sum(b'"statuses"' in body for body in bodies)
    assert statuses / len(bodies) == pytest.approx(0.75, abs=0.03)


def test_the_callbacks_kept_up_with_a_worker(
    spawn: Any, env: dict[str, str], tmp_path: Path, redis_url: str, namespace: str
) -> None:
    port = uvicorn(spawn, "worker_app:app", env)
    spawn.worker("worker_hooks:wa", processes=1, threads=4, **env)
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: client.zcard(KeyLayout(namespace=namespace).heartbeats) > 0, timeout=30)
    finally:
        client.close()
    done = loadtest(
        tmp_path, f"http://127.0.0.1:{port}/webhook", "--rate", "100", "--duration", "3", "--warmup", "0.5",
        "--basic-auth", "testuser:testpass", "--broker-url", redis_url, "--namespace", namespace,
        "--out", str(tmp_path / "run"), "--no-plot",
    )  # fmt: skip
    assert done.returncode == EXIT_PASS, done.stdout + done.stderr
    assert "callbacks: kept up" in done.stdout
    queue = results(tmp_path / "run")["queue"]
    assert queue["kept_up"] is True and queue["lag_end_s"] <= 1.0 and len(queue["samples"]) >= 5
    assert not (tmp_path / "run" / "latency.png").exists()


def test_https_with_a_self_signed_certificate(spawn: Any, env: dict[str, str], tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    port = uvicorn(spawn, "worker_app:app", env, "--ssl-keyfile", str(key), "--ssl-certfile", str(cert))
    url = f"https://127.0.0.1:{port}/webhook"
    common = ["--rate", "200", "--duration", "3", "--warmup", "0.5", "--basic-auth", "testuser:testpass"]

    refused = loadtest(tmp_path, url, *common, "--out", str(tmp_path / "refused"))
    assert refused.returncode == EXIT_CONNECTION
    assert "certificate is not trusted" in refused.stderr and "--insecure" in refused.stderr
    assert not (tmp_path / "refused" / "results.json").exists()

    done = loadtest(tmp_path, url, *common, "--insecure", "--out", str(tmp_path / "run"))
    assert done.returncode == EXIT_PASS, done.stdout + done.stderr
    assert "verdict: PASS" in done.stdout
    data = results(tmp_path / "run")
    assert data["options"]["tls"] is True and data["url"] == url
    assert (data["summary"]["measured"], data["summary"]["ok"]) == (600, 600)


@pytest.mark.parametrize(
    ("scheme", "options"),
    [
        pytest.param("360dialog", ["--dialog360-secret", "partner-secret"], id="360dialog"),
        pytest.param("meta", ["--meta-app-secret", "meta-app-secret"], id="meta"),
        pytest.param("token", ["--header", "X-Webhook-Token: load-token"], id="header-token"),
        pytest.param(
            "basic+360dialog",
            ["--basic-auth", "testuser:testpass", "--dialog360-secret", "partner-secret"],
            id="basic-and-360dialog",
        ),
    ],
)
def test_each_auth_scheme(spawn: Any, env: dict[str, str], tmp_path: Path, scheme: str, options: list[str]) -> None:
    port = uvicorn(spawn, "loadtest_app:app", {**env, "WA_LOADTEST_AUTH": scheme})
    out = tmp_path / "run"
    done = loadtest(
        tmp_path, f"http://127.0.0.1:{port}/webhook", "--rate", "100", "--duration", "2", "--warmup", "0.2",
        *options, "--out", str(out), "--no-plot",
    )  # fmt: skip
    assert done.returncode == EXIT_PASS, done.stdout + done.stderr
    summary = results(out)["summary"]
    assert summary["ok"] == summary["measured"] == 200


def test_a_secret_from_the_environment(spawn: Any, env: dict[str, str], tmp_path: Path) -> None:
    port = uvicorn(spawn, "loadtest_app:app", {**env, "WA_LOADTEST_AUTH": "360dialog"})
    done = subprocess.run(
        [sys.executable, "-m", "wa_middleware.cli", "loadtest", f"http://127.0.0.1:{port}/webhook",
         "--rate", "50", "--duration", "1", "--warmup", "0", "--out", str(tmp_path / "run"), "--no-plot"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "WA_LOADTEST_DIALOG360_SECRET": "partner-secret"},
    )  # fmt: skip
    assert done.returncode == EXIT_PASS, done.stdout + done.stderr
    assert "partner-secret" not in done.stdout + (tmp_path / "run" / "results.json").read_text()


def test_a_wrong_secret_stops_after_the_probe(spawn: Any, env: dict[str, str], tmp_path: Path) -> None:
    port = uvicorn(spawn, "loadtest_app:app", {**env, "WA_LOADTEST_AUTH": "360dialog"})
    started = time.monotonic()
    done = loadtest(
        tmp_path, f"http://127.0.0.1:{port}/webhook", "--rate", "100", "--duration", "30",
        "--dialog360-secret", "not-the-secret", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert done.returncode == EXIT_FAIL
    assert "answered 401 (check the auth options)" in done.stderr
    assert time.monotonic() - started < 20  # not the 30 s: nothing but the probe was sent


def test_a_closed_port_is_reported_cleanly(tmp_path: Path) -> None:
    port = free_port()
    done = loadtest(tmp_path, f"http://127.0.0.1:{port}/webhook", "--rate", "200", "--duration", "3")
    assert done.returncode == EXIT_CONNECTION
    [line] = done.stderr.strip().splitlines()
    url = f"http://127.0.0.1:{port}/webhook"
    assert line == f"wa-middleware: {url}: connection refused (nothing listens on that port?); nothing else was sent"


def test_an_unreachable_broker_is_reported_cleanly(spawn: Any, env: dict[str, str], tmp_path: Path) -> None:
    port = uvicorn(spawn, "worker_app:app", env)
    done = loadtest(
        tmp_path, f"http://127.0.0.1:{port}/webhook", "--rate", "10", "--duration", "1",
        "--broker-url", f"redis://127.0.0.1:{free_port()}/0",
    )  # fmt: skip
    assert done.returncode == EXIT_CONNECTION
    assert "cannot read the queue at --broker-url" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--duration", "1"], "give the load", id="no-rate"),
        pytest.param(["--rate", "10", "--outgoing", "5"], "either --rate or", id="rate-and-mix"),
        pytest.param(["--rate", "0"], "--rate must be a positive", id="zero-rate"),
        pytest.param(["--outgoing", "0", "--incoming", "0"], "not both zero", id="zero-mix"),
        pytest.param(["--rate", "10", "--duration", "0"], "duration", id="zero-duration"),
        pytest.param(["--rate", "10", "--processes", "0"], "--processes", id="no-process"),
        pytest.param(["--rate", "10", "--basic-auth", "nocolon"], "USER:PASS", id="basic-auth"),
        pytest.param(["--rate", "10", "-H", "X-Token"], "NAME:VALUE", id="header"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    done = loadtest(tmp_path, "http://127.0.0.1:9/webhook", *args)
    assert done.returncode == EXIT_USAGE
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_bad_url_is_a_usage_error(tmp_path: Path) -> None:
    done = loadtest(tmp_path, "ftp://127.0.0.1/webhook", "--rate", "10")
    assert done.returncode == EXIT_USAGE and "http:// or https://" in done.stderr


def test_every_option_is_in_the_help_and_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    from wa_middleware.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["loadtest", "--help"])
    shown = capsys.readouterr().out
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["loadtest"]
    options = [o for action in sub._actions for o in action.option_strings if o.startswith("--") and o != "--help"]
    assert len(options) == 19
    docs = (Path(__file__).resolve().parents[2] / "docs" / "loadtest.md").read_text()
    for option in options:
        assert option in shown
        assert f"`{option}" in docs, f"{option} is not documented in docs/loadtest.md"
    assert "servers you own" in shown and "servers you own" in docs
