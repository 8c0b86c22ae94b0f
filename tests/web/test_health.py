"""Health checks through real servers (uvicorn, gunicorn) and a real Redis, stopped half-way for the 503."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.ops_helpers import free_port, get, private_redis, start_app
from wa_middleware import BasicAuth, ConfigurationError, NoAuth, Webhook
from wa_middleware.web.health import HealthCheck, HealthReport

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


@pytest.fixture(params=["asgi", "wsgi"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, object]]:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    cm = private_redis(redis_dir)
    broker = cm.__enter__()
    stopped = False

    def stop_redis() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            cm.__exit__(None, None, None)

    proc, url = start_app(tmp_path, request.param, broker)
    try:
        yield url, stop_redis
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
        stop_redis()


def test_health_path_and_standalone_check(served: tuple[str, object]) -> None:
    url, stop_redis = served
    for path in ("/healthz", "/standalone-health"):
        status, headers, body = get(url + path)
        assert status == 200, body
        report = json.loads(body)
        assert report["status"] == "ok"
        assert report["broker"]["reachable"] is True
        assert 0 <= report["broker"]["latency_ms"] < 1000
        assert headers["content-type"] == "application/json"
        assert headers["cache-control"] == "no-store"
        assert "redis://" not in body.decode()
    status, _, body = get(url + "/healthz", method="HEAD")
    assert (status, body) == (200, b"")
    status, headers, _ = get(url + "/healthz", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert get(url + "/")[2] == b"home"  # other paths still reach the app

    stop_redis()  # type: ignore[operator]
    for path in ("/healthz", "/standalone-health"):
        status, headers, body = get(url + path)
        assert status == 503, body
        report = json.loads(body)
        assert report["status"] == "unavailable"
        assert report["broker"] == {"reachable": False, "latency_ms": None, "error": report["broker"]["error"]}
        assert report["broker"]["error"]
        assert "127.0.0.1" not in body.decode()


def test_health_is_off_by_default() -> None:
    wa = Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:7299/12")
    assert wa.health_path is None and wa.metrics_path is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"health_path": "healthz"}, "must be a path", id="relative"),
        pytest.param({"health_path": "/webhook"}, "already served", id="same-as-webhook"),
        pytest.param({"health_path": "/x", "metrics_path": "/x"}, "already served", id="health-equals-metrics"),
    ],
)
def test_bad_paths_fail_at_configuration(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Webhook(auth=BasicAuth("u", "p"), broker_url="redis://127.0.0.1:7299/12", **kwargs)  # type: ignore[arg-type]


def test_metrics_path_without_prometheus_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from wa_middleware import metrics

    monkeypatch.setattr(metrics, "AVAILABLE", False)
    with pytest.raises(ConfigurationError, match="prometheus-client"):
        Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:7299/12", metrics_path="/metrics")


def test_check_function_on_unreachable_broker() -> None:
    port = free_port()
    report = HealthCheck(f"redis://:hunter2@127.0.0.1:{port}/12", timeout=0.5).check()
    assert not report.ok and report.latency_ms is None and report.error
    assert "hunter2" not in json.dumps(report.as_dict())
    assert report.response().status == 503


def test_check_function_on_shared_redis() -> None:
    report = HealthCheck("redis://127.0.0.1:6379/12").check()
    assert report.ok, report
    assert report.response().status == 200


def test_async_check_on_shared_redis() -> None:
    import asyncio

    async def main() -> HealthReport:
        check = HealthCheck("redis://127.0.0.1:6379/12")
        report = await check.acheck()
        for client in check._async.values():
            await client.aclose()
        return report

    assert asyncio.run(main()).ok


def test_report_rendering() -> None:
    ok = HealthReport(True, 0.25)
    assert json.loads(ok.response().body) == {
        "status": "ok",
        "broker": {"reachable": True, "latency_ms": 0.25},
        "version": __import__("wa_middleware").__version__,
    }
    assert ok.response("HEAD").body == b""
    assert ok.response("DELETE").status == 405
    assert "hunter2" not in repr(HealthCheck("redis://:hunter2@localhost/0"))


def test_health_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from wa_middleware import cli

    monkeypatch.delenv("WA_BROKER_URL", raising=False)
    assert cli.main(["health", "--broker-url", "redis://127.0.0.1:6379/12"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"
    assert cli.main(["health", "--broker-url", f"redis://127.0.0.1:{free_port()}/12", "--timeout", "0.5"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "unavailable"
    assert cli.main(["health"]) == 2
    (tmp_path / "probeapp.py").write_text(
        "from wa_middleware import NoAuth, Webhook\n"
        "wa = Webhook(auth=NoAuth(), broker_url='redis://127.0.0.1:6379/12', queue_name='wa-ops-probe')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["health", "probeapp:wa"]) == 0
    assert cli.main(["health", "probeapp:nothing"]) == 2


def test_documented_mounting(tmp_path: Path) -> None:
    """The forms the README shows: a FastAPI route to the HealthCheck itself, a WSGI dispatcher to .wsgi."""
    import asyncio

    from fastapi import FastAPI
    from starlette.routing import Route
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.test import Client

    health = HealthCheck("redis://127.0.0.1:6379/12")
    app = FastAPI()
    app.router.routes.append(Route("/healthz", health))

    async def call(method: str) -> tuple[int, bytes]:
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": "/healthz", "headers": [], "query_string": b""}
        await app(scope, receive, send)  # type: ignore[arg-type]
        for client in health._async.values():
            await client.aclose()
        return int(sent[0]["status"]), bytes(sent[1]["body"])  # type: ignore[call-overload]

    status, body = asyncio.run(call("GET"))
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert asyncio.run(call("POST"))[0] == 405

    def flask_like(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        raise AssertionError("not reached")

    wsgi = DispatcherMiddleware(flask_like, {"/healthz": health.wsgi})
    answer = Client(wsgi).get("/healthz")
    assert answer.status_code == 200 and answer.json["status"] == "ok"  # type: ignore[index]
    health._sync.close()


def test_health_of_a_webhook_reports_queue_workers_and_memory(redis_url: str, namespace: str) -> None:
    """Queue depth, the oldest waiting delivery's age, retries and dead letters, worker heartbeats and
    memory, for a `Webhook` (read only: the check itself is about storing deliveries)."""
    import time

    from wa_middleware import BasicAuth, Webhook, testing

    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace)
    enqueuer = wa.sync_enqueuer()
    job = wa.core.finish({}, testing.text("waiting").to_bytes())
    enqueuer.enqueue(job.message_id, job.data)
    time.sleep(0.05)
    lease = wa.broker.dispatcher.lease
    lease.heartbeat()  # one worker process, registered
    report = HealthCheck(wa).check().as_dict()
    wa.close()
    assert report["status"] == "ok" and report["broker"]["memory"]["policy"] == "noeviction"
    assert report["queue"]["waiting"] == 1 and report["queue"]["oldest_age_s"] >= 0.04
    assert report["queue"]["dead_letters"] == 0 and report["queue"]["retries_waiting"] == 0
    assert report["workers"]["alive"] == 1 and report["workers"]["processes"][0]["last_seen_s"] < 5
