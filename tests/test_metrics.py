"""Prometheus metrics: web side through uvicorn/gunicorn, worker side through a real dramatiq worker and Redis."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops_helpers import get, private_redis, start_app

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from wa_middleware import NoAuth, Webhook, metrics  # noqa: E402
from wa_middleware.cli.commands import SAMPLE_DELIVERY  # noqa: E402

DELIVERY = json.dumps(SAMPLE_DELIVERY).encode()
AUTH = "Basic " + base64.b64encode(b"user:pass").decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def post(url: str, auth: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    request = urllib.request.Request(url, data=DELIVERY, headers=headers, method="POST")
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
def test_web_side_metrics_path(tmp_path: Path, broker: str, kind: str) -> None:
    proc, url = start_app(tmp_path, kind, broker, metrics="/metrics")
    try:
        assert post(url + "/webhook", AUTH) == 200
        assert post(url + "/webhook", AUTH) == 200
        assert post(url + "/webhook", "Basic d3Jvbmc6d3Jvbmc=") == 401
        status, headers, body = get(url + "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        found = samples(body.decode())
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert found[("wa_middleware_requests_total", (("status", "200"),))] == 2
    assert found[("wa_middleware_requests_total", (("status", "401"),))] == 1
    assert found[("wa_middleware_request_duration_seconds_count", ())] == 3
    assert found[("wa_middleware_enqueue_duration_seconds_count", ())] == 2
    assert found[("wa_middleware_enqueue_failures_total", ())] == 0
    ready = [
        v for (name, labels), v in found.items() if name == "wa_middleware_queue_depth" and ("state", "ready") in labels
    ]
    assert ready == [2]  # both deliveries wait in the queue: no worker runs


def value(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def test_worker_side_metrics(broker: str) -> None:
    """A real dramatiq worker: events, runs, failures, a retry, then the dead letter of the retried callback."""
    import dramatiq

    from wa_middleware.worker.encoder import install

    queue = f"wa-ops-metrics-{uuid.uuid4().hex[:8]}"
    wa = Webhook(auth=NoAuth(), broker_url=broker, queue_name=queue, max_retries=1, min_backoff=10, max_backoff=20)
    name_ok, name_bad = f"ok-{queue}", f"bad-{queue}"

    @wa.on_message(name=name_ok)
    def fine(message: object) -> None:
        pass

    @wa.on_message(name=name_bad)
    def broken(message: object) -> None:
        raise RuntimeError("boom")

    install()
    before = value("wa_middleware_events_total", kind="message")
    worker = dramatiq.Worker(wa.broker, queues={queue}, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        job = wa.core.finish({}, DELIVERY)  # stored as the request path stores it
        wa.sync_enqueuer().enqueue(job.message_id, job.data)
        deadline = time.monotonic() + 20
        while value("wa_middleware_dead_letters_total", callback=name_bad) < 1:
            assert time.monotonic() < deadline, "the failing callback was never dead-lettered"
            time.sleep(0.05)
    finally:
        worker.stop()
        wa.close()
    assert value("wa_middleware_events_total", kind="message") == before + 1
    assert value("wa_middleware_callback_runs_total", callback=name_ok) == 1
    assert value("wa_middleware_callback_runs_total", callback=name_bad) == 2  # first try, one retry
    assert value("wa_middleware_callback_failures_total", callback=name_bad) == 2
    assert value("wa_middleware_callback_failures_total", callback=name_ok) == 0
    assert value("wa_middleware_callback_retries_total", callback=name_bad) == 1
    assert value("wa_middleware_dead_letters_total", callback=name_bad) == 1


def test_dead_letter_without_retries(broker: str) -> None:
    queue = f"wa-ops-metrics-{uuid.uuid4().hex[:8]}"
    wa = Webhook(auth=NoAuth(), broker_url=broker, queue_name=queue, max_retries=0)
    name = f"bad-{queue}"

    @wa.on_message(name=name)
    def broken(message: object) -> None:
        raise RuntimeError("boom")

    import dramatiq

    from wa_middleware.worker.encoder import install

    install()
    worker = dramatiq.Worker(wa.broker, queues={queue}, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        job = wa.core.finish({}, DELIVERY)
        wa.sync_enqueuer().enqueue(job.message_id, job.data)
        deadline = time.monotonic() + 20
        while value("wa_middleware_dead_letters_total", callback=name) < 1:
            assert time.monotonic() < deadline, "the failing callback was never dead-lettered"
            time.sleep(0.05)
    finally:
        worker.stop()
        wa.close()
    assert value("wa_middleware_dead_letters_total", callback=name) == 1
    assert value("wa_middleware_callback_retries_total", callback=name) == 0
    metrics.duplicate_skipped(2)
    assert value("wa_middleware_duplicates_skipped_total") >= 2


def test_everything_works_without_prometheus(tmp_path: Path) -> None:
    """In a process where prometheus_client cannot be imported, hooks are no-ops and requests still work."""
    script = tmp_path / "noprom.py"
    script.write_text(
        "import sys\n"
        "sys.modules['prometheus_client'] = None  # makes 'import prometheus_client' fail\n"
        "from wa_middleware import metrics, NoAuth, Webhook, ConfigurationError\n"
        "assert metrics.AVAILABLE is False and metrics.get() is None\n"
        "metrics.request_done(200, 0.1); metrics.enqueue_done(0.1, ok=False); metrics.events_decoded(['message'])\n"
        "metrics.callback_run('x', ok=True); metrics.callback_retry('x'); metrics.dead_letter('x')\n"
        "metrics.duplicate_skipped()\n"
        "from wa_middleware.adapters.asgi import WebhookMiddleware\n"
        "wa = Webhook(auth=NoAuth(), broker_url='redis://127.0.0.1:6379/12', health_path='/healthz')\n"
        "WebhookMiddleware(lambda *a: None, webhook=wa)\n"
        "try:\n"
        "    Webhook(auth=NoAuth(), broker_url='redis://127.0.0.1:6379/12', metrics_path='/metrics')\n"
        "except ConfigurationError:\n"
        "    print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


WORKER_APP = """
import os
from wa_middleware import NoAuth, Webhook

wa = Webhook(auth=NoAuth(), broker_url=os.environ["TEST_BROKER"], queue_name=os.environ["TEST_QUEUE"])

@wa.on_message(name="count-me")
def count_me(message):
    pass
"""


def test_worker_cli_serves_metrics_of_all_processes(tmp_path: Path, broker: str) -> None:
    import os

    from tests.ops_helpers import free_port, wait_port

    queue = f"wa-ops-worker-{uuid.uuid4().hex[:8]}"
    (tmp_path / "workerapp.py").write_text(WORKER_APP)
    port = free_port()
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = {**os.environ, "TEST_BROKER": broker, "TEST_QUEUE": queue, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    argv = [str(Path(sys.executable).parent / "wa-middleware"), "worker", "workerapp:wa", "--processes", "2"]
    argv += ["--threads", "1", "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, 30)
        wa = Webhook(auth=NoAuth(), broker_url=broker, queue_name=queue)
        for i in range(3):  # three different messages (the same one three times would run once)
            job = wa.core.finish({}, DELIVERY.replace(b'"id": "wamid.', b'"id": "wamid.%d' % i, 1))
            wa.sync_enqueuer().enqueue(job.message_id, job.data)
        wa.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                found = samples(get(f"http://127.0.0.1:{port}/metrics")[2].decode())
            except ValueError:  # a scrape racing a worker process creating its sample file: try again
                found = {}
            if found.get(("wa_middleware_callback_runs_total", (("callback", "count-me"),))) == 3:
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.2)
        assert found[("wa_middleware_events_total", (("kind", "message"),))] == 3
        assert found[("wa_middleware_queue_depth", (("queue", queue), ("state", "ready")))] == 0
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_metrics_path_sums_gunicorn_workers(tmp_path: Path, broker: str) -> None:
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    proc, url = start_app(
        tmp_path, "wsgi", broker, metrics="/metrics", workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    )
    try:
        for _ in range(6):
            assert post(url + "/webhook", AUTH) == 200
        found = samples(get(url + "/metrics")[2].decode())
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert found[("wa_middleware_requests_total", (("status", "200"),))] == 6
    assert found[("wa_middleware_enqueue_duration_seconds_count", ())] == 6


def test_import_stays_light() -> None:
    """Neither prometheus_client nor dramatiq is imported by ``import wa_middleware`` (or the adapters' modules)."""
    code = (
        "import sys, wa_middleware, wa_middleware.adapters.asgi, wa_middleware.adapters.wsgi\n"
        "print(sorted(m for m in ('dramatiq', 'prometheus_client') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
