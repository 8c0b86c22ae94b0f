"""End to end through real servers (uvicorn, gunicorn), real Redis and real worker processes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import PAYLOADS, SHARED_PAYLOADS, read_events, wait_until

AUTH = ("testuser", "testpass")
SERVERS = [
    pytest.param(("uvicorn", "starlette_app:app"), id="starlette-uvicorn"),
    pytest.param(("uvicorn", "fastapi_app:app"), id="fastapi-uvicorn"),
    pytest.param(("gunicorn", "flask_app:app"), id="flask-gunicorn"),
]


def body(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def queue_length(url: str, namespace: str = "dramatiq") -> int:
    client = redis.Redis.from_url(url)
    try:
        # Messages are deleted from these hashes only when acknowledged: in flight counts as queued.
        return int(client.hlen(f"{namespace}:wa_middleware.msgs")) + int(
            client.hlen(f"{namespace}:wa_middleware.DQ.msgs")
        )
    finally:
        client.close()


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, spawn, redis_url: str, namespace: str, events_file: Path):  # type: ignore[no-untyped-def]
    kind, app = request.param
    env = {"WA_BROKER_URL": redis_url, "WA_NAMESPACE": namespace, "WA_EVENTS": str(events_file)}
    return getattr(spawn, kind)(app, **env), env


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def test_deliveries_reach_typed_callbacks(server, spawn, client: httpx.Client, events_file: Path) -> None:  # type: ignore[no-untyped-def]
    proc, env = server
    for name in ("text.json", "multi.json", "status_failed.json", "value_error.json", "template_status.json",
                 "unknown_type.json", "onprem_text.json", "bsuid_only.json"):  # fmt: skip
        response = client.post(proc.url + "/webhook", content=body(name), auth=AUTH)
        assert response.status_code == 200, (name, response.text)
    spawn.worker("hooks:wa", **env)

    def done() -> list[dict]:  # type: ignore[type-arg]
        events = read_events(events_file)
        return events if len(events) >= 17 else []

    events = wait_until(done, timeout=60)
    by_callback: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for event in events:
        by_callback.setdefault(event["callback"], []).append(event)

    texts = {e["event"]["text"]["body"]: e for e in by_callback["on_text"]}
    assert set(texts) == {"hello there", "one", "two", "legacy hello", "no phone here"}
    hello = texts["hello there"]
    assert hello["event"]["from"] == "4915112345678"  # from_ is encoded back as "from"
    assert hello["sender_name"] == "Ana Example"
    assert hello["ctx"]["metadata"] == {"display_phone_number": "15550001111", "phone_number_id": "100000000000001"}
    assert hello["ctx"]["waba_id"] == "200000000000001"
    assert texts["two"]["sender_name"] == "Ben Example"  # the right contact of a multi-message delivery
    assert texts["legacy hello"]["sender_name"] == "Old Api"  # On-Premise flat body
    assert texts["no phone here"]["sender_name"] == "No Phone"

    # on_message() sees every message, known type or not; the unknown one keeps its payload.
    types = sorted(e["type"] for e in by_callback["on_any_message"])
    assert types == sorted(["text", "text", "text", "location", "hologram", "text", "text"])
    hologram = next(e for e in by_callback["on_any_message"] if e["type"] == "hologram")
    assert hologram["event"]["raw"]["hologram"] == {"frames": 24, "url": "https://example.invalid/h"}

    statuses = sorted(e["event"]["status"] for e in by_callback["on_status"])
    assert statuses == ["delivered", "failed", "read"]
    failed = next(e for e in by_callback["on_status"] if e["event"]["status"] == "failed")
    assert failed["event"]["errors"][0]["code"] == 131026
    assert failed["event"]["errors"][0]["error_data"]["details"] == "Receiver is incapable of receiving this message"

    assert [e["event"]["code"] for e in by_callback["on_error"]] == [130429]
    changes = by_callback["on_change"]
    assert [c["event"]["field"] for c in changes] == ["message_template_status_update"]
    assert changes[0]["event"]["value"]["event"] == "APPROVED"


def test_rejections_store_nothing(server, client: httpx.Client, redis_url: str, namespace: str) -> None:  # type: ignore[no-untyped-def]
    proc, _ = server
    url = proc.url + "/webhook"
    good = body("text.json")
    cases = [
        ("no auth", dict(content=good), 401),
        ("wrong password", dict(content=good, auth=("testuser", "nope")), 401),
        ("bearer", dict(content=good, headers={"Authorization": "Bearer abc"}), 401),
        ("garbage basic", dict(content=good, headers={"Authorization": "Basic %%%"}), 401),
        ("not json", dict(content=b"hello", auth=AUTH), 400),
        ("json array", dict(content=b"[1, 2]", auth=AUTH), 400),
        ("truncated json", dict(content=good[:-5], auth=AUTH), 400),
        ("empty", dict(content=b"", auth=AUTH), 400),
        ("over cap", dict(content=b"{" + b" " * (1024 * 1024) + b"}", auth=AUTH), 413),
    ]
    for name, kwargs, expected in cases:
        if name == "over cap":
            # Refused before its body is read; gunicorn then drains at most 64 KiB of it and closes
            # the kept-alive connection, so this one gets a connection of its own.
            response = httpx.post(url, timeout=10, **kwargs)  # type: ignore[arg-type]
        else:
            response = client.post(url, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == expected, name
        assert response.headers["content-type"] == "application/json", name
        if expected == 401:
            assert response.headers["www-authenticate"].startswith("Basic"), name
    assert client.get(url, auth=AUTH).status_code == 405
    assert client.get(url, auth=AUTH).headers["allow"] == "POST"
    assert queue_length(redis_url, namespace) == 0

    # The app's own routes are untouched.
    home = client.get(proc.url + "/items/7" if "fastapi" in proc.args[-5] else proc.url + "/")
    assert home.status_code == 200
    assert client.post(url, content=good, auth=AUTH).status_code == 200
    assert queue_length(redis_url, namespace) == 1


@pytest.mark.parametrize("kind,app", [("uvicorn", "starlette_app:app"), ("gunicorn", "flask_app:app")])
def test_chunked_body_over_cap(kind: str, app: str, spawn, redis_url: str, namespace: str, events_file: Path) -> None:  # type: ignore[no-untyped-def]
    proc = getattr(spawn, kind)(
        app, WA_BROKER_URL=redis_url, WA_NAMESPACE=namespace, WA_EVENTS=str(events_file), WA_MAX_BODY="4096"
    )

    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"object": "x", "pad": "'
        for _ in range(total // 1024):
            yield b"a" * 1024
        yield b'"}'

    with httpx.Client(timeout=10) as client:
        big = client.post(proc.url + "/webhook", content=chunks(8192), auth=AUTH)
        small = client.post(proc.url + "/webhook", content=chunks(1024), auth=AUTH)
    assert big.status_code == 413  # no Content-Length was sent: the cap still holds
    assert small.status_code == 200
    assert queue_length(redis_url, namespace) == 1


@pytest.mark.parametrize("kind,app", [("uvicorn", "fastapi_app:app"), ("gunicorn", "flask_app:app")])
def test_redis_outage_gives_503_then_recovers(kind: str, app: str, spawn, tmp_path: Path, events_file: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import RedisServer

    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    env = {"WA_BROKER_URL": server.url, "WA_EVENTS": str(events_file), "WA_ENQUEUE_TIMEOUT": "0.5"}
    proc = getattr(spawn, kind)(app, **env)
    accepted = []
    with httpx.Client(timeout=10) as client:

        def post(i: int) -> int:
            payload = json.loads(body("text.json"))
            payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = f"wamid.OUTAGE{i}"
            status = client.post(proc.url + "/webhook", content=json.dumps(payload), auth=AUTH).status_code
            if status == 200:
                accepted.append(f"wamid.OUTAGE{i}")
            return status

        assert post(0) == 200
        server.stop()
        down = [client.post(proc.url + "/webhook", content=body("text.json"), auth=AUTH) for _ in range(3)]
        assert [r.status_code for r in down] == [503, 503, 503]
        assert all(r.headers["retry-after"].isdigit() for r in down)
        server.start()  # same port and data directory: the AOF brings back what was acknowledged
        wait_until(lambda: post(1) == 200, timeout=15)  # recovers without a restart of the web process
        assert post(2) == 200
    spawn.worker("hooks:wa", **env)
    wait_until(lambda: len([e for e in read_events(events_file) if e["callback"] == "on_text"]) >= len(accepted), 60)
    seen = {e["event"]["id"] for e in read_events(events_file) if e["callback"] == "on_text"}
    assert set(accepted) <= seen  # every delivery that got a 200 was processed
    server.stop()


def test_stock_dramatiq_cli_consumes(spawn, redis_url: str, namespace: str, events_file: Path) -> None:  # type: ignore[no-untyped-def]
    """The messages the request path writes are plain dramatiq messages: dramatiq's own CLI runs them."""
    env = {"WA_BROKER_URL": redis_url, "WA_NAMESPACE": namespace, "WA_EVENTS": str(events_file)}
    proc = spawn.uvicorn("starlette_app:app", **env)
    with httpx.Client(timeout=10) as client:
        assert client.post(proc.url + "/webhook", content=body("text.json"), auth=AUTH).status_code == 200
    spawn.command(
        [sys.executable, "-m", "dramatiq", "wa_middleware.worker:setup", "-p", "1", "-t", "1", "-Q", "wa_middleware"],
        WA_MIDDLEWARE_APP="hooks:wa",
        **env,
    )
    events = wait_until(lambda: [e for e in read_events(events_file) if e["callback"] == "on_text"], timeout=60)
    assert events[0]["event"]["text"]["body"] == "hello there"


def test_failing_callback_retried_alone(spawn, redis_url: str, namespace: str, events_file: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"WA_BROKER_URL": redis_url, "WA_NAMESPACE": namespace, "WA_EVENTS": str(events_file)}
    proc = spawn.uvicorn("starlette_app:app", **env)
    with httpx.Client(timeout=10) as client:
        assert client.post(proc.url + "/webhook", content=body("reaction.json"), auth=AUTH).status_code == 200
    spawn.worker("hooks:wa", **env)
    wait_until(lambda: len([e for e in read_events(events_file) if e["callback"] == "flaky"]) >= 3, timeout=60)
    events = read_events(events_file)
    assert [e["attempt"] for e in events if e["callback"] == "flaky"] == [1, 2, 3]
    # The other callback of the same event ran once, not once per retry of the flaky one.
    assert len([e for e in events if e["callback"] == "on_any_message"]) == 1


@pytest.mark.skipif(not SHARED_PAYLOADS.is_dir(), reason="the shared payload corpus is not beside this checkout")
def test_shared_corpus_through_server(spawn, redis_url: str, namespace: str, events_file: Path) -> None:  # type: ignore[no-untyped-def]
    """Every real example body is accepted with a 200 and processed without a worker error."""
    env = {"WA_BROKER_URL": redis_url, "WA_NAMESPACE": namespace, "WA_EVENTS": str(events_file)}
    proc = spawn.uvicorn("fastapi_app:app", **env)
    files = sorted(p for p in SHARED_PAYLOADS.glob("*.json"))
    with httpx.Client(timeout=10) as client:
        for path in files:
            assert client.post(proc.url + "/webhook", content=path.read_bytes(), auth=AUTH).status_code == 200, path
    worker = spawn.worker("hooks:wa", threads=4, **env)
    wait_until(lambda: queue_length(redis_url, namespace) == 0, timeout=120)
    failures = [
        line for line in Path(worker.log).read_text().splitlines() if "Failed to process message wa.dispatch" in line
    ]
    assert failures == []
    kinds = {e["callback"] for e in read_events(events_file)}
    assert {"on_text", "on_any_message", "on_status", "on_error", "on_change"} <= kinds
