"""The load-test engine (wa_middleware/ops/loadtest.py): requests signed as the schemes check them,
the open-loop schedule's counts, unique ids, non-200s and timeouts against a recording server, the
fallback without HdrHistogram, the verdict, the notes and the queue watch against Redis."""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.ops_helpers import RecordingServer, recording_server
from wa_middleware.keys import KeyLayout
from wa_middleware.ops import loadtest
from wa_middleware.ops.loadtest import (
    UNIQUE,
    Credentials,
    Latencies,
    LoadGenerator,
    LoadReport,
    LoadResult,
    LoadSpec,
    QueueReport,
    QueueSample,
    QueueWatch,
    judge,
    notes,
    parse_url,
    probe,
    sender_rate,
    write_plot,
    write_results,
)
from wa_middleware.web.auth import AllOf, BasicAuth, Dialog360Signature, HeaderAuth, HubSignature256
from wa_middleware.worker.encoder import MsgpackEncoder

BODIES = tuple(b'{"object":"whatsapp_business_account","id":"wamid.T.' + UNIQUE + b'.%d"}' % i for i in range(7))


@pytest.fixture(scope="module")
def generator() -> Iterator[LoadGenerator]:
    with LoadGenerator(1) as gen:
        yield gen


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server() as srv:
        srv.reply("POST", "/webhook", body={"status": "stored"})
        yield srv


def spec_for(server: RecordingServer, **options: object) -> LoadSpec:
    defaults: dict[str, object] = {"rate": 100.0, "duration": 1.0, "bodies": BODIES, "warmup": 0.2, "connections": 4}
    defaults.update(options)
    return LoadSpec.for_url(f"{server.url}/webhook", **defaults)  # type: ignore[arg-type]


# -- what is sent ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "scheme"),
    [
        pytest.param(Credentials(basic=("u", "p:w")), BasicAuth("u", "p:w"), id="basic"),
        pytest.param(Credentials(headers=(("X-Token", "t0k"),)), HeaderAuth("X-Token", "t0k"), id="header-token"),
        pytest.param(Credentials(dialog360_secret=b"partner"), Dialog360Signature("partner"), id="360dialog"),
        pytest.param(
            Credentials(dialog360_secret=b"s", dialog360_header="x-own-signature"),
            Dialog360Signature("s", header="x-own-signature"),
            id="360dialog-own-header",
        ),
        pytest.param(Credentials(meta_app_secret=b"app-secret"), HubSignature256("app-secret"), id="meta"),
        pytest.param(
            Credentials(basic=("u", "p"), dialog360_secret=b"partner"),
            AllOf(BasicAuth("u", "p"), Dialog360Signature("partner")),
            id="basic-and-360dialog",
        ),
    ],
)
def test_requests_authenticate_as_the_scheme_checks(credentials: Credentials, scheme: object) -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    headers = {k.lower(): v for k, v in credentials.fixed_headers() + credentials.signature_headers(body)}
    assert scheme.verify(headers, body)  # type: ignore[attr-defined]
    assert not scheme.verify(headers, body + b" ") or not credentials.signs  # type: ignore[attr-defined]
    assert all("secret" not in name and "partner" not in name for name in credentials.schemes())


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        pytest.param({"basic": ("", "p")}, "Basic auth", id="empty-user"),
        pytest.param({"basic": ("a:b", "p")}, "Basic auth", id="colon-in-user"),
        pytest.param({"headers": (("X Token", "v"),)}, "invalid header name", id="space-in-name"),
        pytest.param({"headers": (("X-Token", "a\r\nb"),)}, "line break", id="header-injection"),
        pytest.param({"meta_app_secret": b""}, "empty", id="empty-secret"),
    ],
)
def test_bad_credentials_are_refused(credentials: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Credentials(**credentials)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("http://example.com/webhook", (False, "example.com", 80, "/webhook", "example.com"), id="http"),
        pytest.param("https://example.com", (True, "example.com", 443, "/", "example.com"), id="https-default"),
        pytest.param(
            "https://h.example:8443/wh?x=1", (True, "h.example", 8443, "/wh?x=1", "h.example:8443"), id="port-query"
        ),
        pytest.param("http://[::1]:8000/w", (False, "::1", 8000, "/w", "[::1]:8000"), id="ipv6"),
    ],
)
def test_urls(url: str, expected: tuple[object, ...]) -> None:
    target = parse_url(url)
    assert (target.tls, target.host, target.port, target.path, target.host_header) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("ftp://example.com/", "http:// or https://", id="scheme"),
        pytest.param("example.com/webhook", "http:// or https://", id="no-scheme"),
        pytest.param("https://user:pw@example.com/", "--basic-auth", id="credentials-in-url"),
        pytest.param("http:///webhook", "no host", id="no-host"),
        pytest.param("http://example.com:99999/", "invalid port", id="bad-port"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_sender_rate_is_three_statuses_per_outgoing_message_plus_the_incoming() -> None:
    assert sender_rate(100, 50) == 350
    assert sender_rate(0, 20) == 20
    with pytest.raises(ValueError):
        sender_rate(0, 0)
    with pytest.raises(ValueError):
        sender_rate(-1, 5)


# -- latencies ------------------------------------------------------------------------------


@pytest.mark.skipif(loadtest.HdrHistogram is None, reason="hdrhistogram is not installed")
def test_the_plain_list_agrees_with_the_histogram() -> None:
    values = [int(1000 * 1.07**i) % 3_000_000 + 1 for i in range(5000)]
    hist, plain = Latencies(), Latencies(exact=True)
    for value in values:
        hist.record(value)
        plain.record(value)
    assert not hist.exact and plain.exact
    for p in (0, 50, 90, 99, 99.9, 100):
        assert plain.percentile(p) == pytest.approx(hist.percentile(p), rel=2e-3)
    assert plain.max() == max(values) and plain.count == hist.count == 5000
    with pytest.raises(ValueError):
        plain.load(hist.dump())


def test_plain_list_percentiles_are_nearest_rank_and_merge() -> None:
    a, b = Latencies(exact=True), Latencies(exact=True)
    for v in (5, 1, 3):
        a.record(v)
    for v in (2, 4):
        b.record(v)
    a.load(b.dump())
    assert [a.percentile(p) for p in (0, 20, 50, 80, 100)] == [1, 1, 3, 4, 5]
    assert a.mean() == 3 and a.encoded() is None
    assert math.isnan(Latencies(exact=True).percentile(50))


# -- runs against a recording server --------------------------------------------------------


def test_a_run_counts_every_request_once_and_every_id_is_unique(
    generator: LoadGenerator, server: RecordingServer
) -> None:
    credentials = Credentials(basic=("u", "p"), meta_app_secret=b"app-secret")
    seen: list[object] = []
    result = generator.run(spec_for(server, credentials=credentials), progress=seen.append)

    assert result.measured == 100  # 1 s at 100/s, after 0.2 s sent but not measured
    assert result.completed == result.ok == result.measured and result.error_count == 0
    assert result.sent == len(server.requests) == 120
    ids = [json.loads(r.body)["id"] for r in server.requests]
    assert len(set(ids)) == len(ids)  # UNIQUE replaced by the request's number
    assert all("@seq@" not in i for i in ids)
    scheme = AllOf(BasicAuth("u", "p"), HubSignature256("app-secret"))
    assert all(scheme.verify(r.headers, r.body) for r in server.requests)
    assert {r.headers["user-agent"].split("/")[0] for r in server.requests} == {"wa-middleware-loadtest"}
    verdict = judge(result)
    assert verdict.passed and verdict.measured == 100 and verdict.non_200 == verdict.errors == 0
    assert seen and seen == result.timeline and result.timeline[-1].phase == "end"
    assert result.timeline[-1].sent == 120 and result.timeline[-1].ok == 120


def test_bodies_without_the_marker_are_sent_as_they_are(generator: LoadGenerator, server: RecordingServer) -> None:
    bodies = (b'{"a":1}', b'{"b":2}')
    generator.run(spec_for(server, bodies=bodies, rate=50.0, duration=0.4, warmup=0.0))
    assert [r.body for r in server.requests] == [bodies[i % 2] for i in range(len(server.requests))]


def test_non_200_answers_fail_the_verdict(generator: LoadGenerator, server: RecordingServer) -> None:
    server.reply("POST", "/webhook", status=503, body={"error": "queue unavailable"})
    result = generator.run(spec_for(server, duration=0.5))
    assert result.non_200 == {503: 50} and result.ok == 0
    verdict = judge(result)
    assert not verdict.passed and verdict.failed_fraction == 1.0 and verdict.over_1s_fraction == 0.0


def test_requests_not_answered_in_time_are_timeouts(generator: LoadGenerator, server: RecordingServer) -> None:
    server.reply("POST", "/webhook", delay=3.0)
    started = time.monotonic()
    result = generator.run(spec_for(server, rate=20.0, duration=0.5, timeout=0.4, drain_timeout=0.5))
    assert time.monotonic() - started < 3.0  # nobody waited for the slow answers
    assert result.errors == {"timeout": result.measured} and result.measured == 10
    assert "no answer within 0.4 s" in result.error_messages["timeout"]
    assert not judge(result).passed and judge(result).over_1s_fraction == 1.0


def test_without_hdrhistogram_every_latency_is_kept(server: RecordingServer) -> None:
    with LoadGenerator(2, exact=True) as gen:  # two processes, their lists merged
        result = gen.run(spec_for(server, duration=0.5))
    assert result.histogram.exact and result.histogram.count == result.measured == 50
    assert result.processes == 2 and len(result.cpu) == 2
    assert judge(result).passed
    assert result.summary()["histogram"] is None


def test_a_closed_port_is_a_connection_error() -> None:
    from tests.ops_helpers import free_port

    port = free_port()
    spec = LoadSpec("127.0.0.1", port, "/webhook", rate=10, duration=0.3, bodies=BODIES, warmup=0)
    answer = probe(spec, timeout=2)
    assert answer.status is None and answer.error_kind == "refused" and not answer.ok
    with LoadGenerator(1) as gen:
        result = gen.run(spec)
    assert result.errors == {"refused": 3} and "refused" in result.error_messages["refused"]
    assert not judge(result).passed


def test_probe_sends_one_signed_request(server: RecordingServer) -> None:
    answer = probe(spec_for(server, credentials=Credentials(dialog360_secret=b"partner")))
    assert answer.ok and answer.body == b'{"status": "stored"}'
    [request] = server.requests
    assert json.loads(request.body)["id"] == "wamid.T.probe.0"
    assert Dialog360Signature("partner").verify(request.headers, request.body)


# -- verdict, notes, files ------------------------------------------------------------------


def synthetic(latencies_ms: list[float], *, lag_ms: float = 1.0, non_200: int = 0, errors: int = 0) -> LoadResult:
    result = LoadResult(100.0, 10.0, Latencies(exact=True), Latencies(exact=True), Latencies(exact=True))
    for ms in latencies_ms:
        result.histogram.record(int(ms * 1000))
        result.send_lag.record(int(lag_ms * 1000))
    result.completed = len(latencies_ms)
    result.slow = sum(ms > 1000 for ms in latencies_ms)
    result.measured = result.completed + errors
    result.non_200 = {503: non_200} if non_200 else {}
    result.errors = {"timeout": errors} if errors else {}
    result.bad = result.slow + non_200 + errors
    result.ok = result.completed - non_200
    result.connections = 64
    return result


@pytest.mark.parametrize(
    ("result", "passed"),
    [
        pytest.param(synthetic([5.0] * 1000), True, id="fast"),
        pytest.param(synthetic([240.0] * 1000), True, id="median-at-the-limit"),
        pytest.param(synthetic([260.0] * 1000), False, id="median-over"),
        pytest.param(synthetic([5.0] * 991 + [1500.0] * 9), True, id="under-1pc-slow"),
        pytest.param(synthetic([5.0] * 990 + [1500.0] * 10), False, id="1pc-slow"),
        pytest.param(synthetic([5.0] * 1000, non_200=10), False, id="1pc-non-200"),
        pytest.param(synthetic([5.0] * 990, errors=10), False, id="1pc-errors"),
        pytest.param(synthetic([]), False, id="nothing-measured"),
    ],
)
def test_the_senders_verdict(result: LoadResult, passed: bool) -> None:
    assert judge(result).passed is passed


def test_notes_say_when_the_generator_fell_behind() -> None:
    result = synthetic([5.0] * 100, lag_ms=40.0)
    assert result.generator_behind and judge(result).generator_behind
    [note] = [n for n in notes(result) if "fell behind" in n]
    assert "--processes 2" in note
    assert not any("fell behind" in n for n in notes(synthetic([5.0] * 100)))
    result.waited, result.interrupted = 50, True
    text = " ".join(notes(result))
    assert "64 connections busy" in text and "interrupted" in text


def test_results_and_plot_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = synthetic([5.0, 7.0, 9.0])
    spec = LoadSpec(
        "127.0.0.1", 1, "/w", rate=100, duration=10, bodies=BODIES, credentials=Credentials(basic=("u", "s3cret"))
    )
    queue = QueueReport("ns:q", [QueueSample(0.0, 0, 0, None), QueueSample(1.0, 5, 7, 0.25)], rate=100)
    report = LoadReport(spec, result, judge(result), notes(result), queue)
    data = json.loads(write_results(report, tmp_path / "r" / "results.json").read_text())
    assert data["verdict"]["passed"] and data["summary"]["measured"] == 3
    assert data["options"]["auth"] == ["basic"] and "s3cret" not in json.dumps(data)
    assert data["queue"]["kept_up"] is True and data["queue"]["depth_max"] == 5
    assert data["summary"]["mean_ms"] == pytest.approx(7.0)
    pytest.importorskip("matplotlib")
    assert write_plot(report, tmp_path / "latency.png") == tmp_path / "latency.png"
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    assert write_plot(report, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


# -- the queue ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "kept_up"),
    [
        pytest.param([(0, 0.0), (3, 0.1), (2, 0.05)], True, id="steady"),
        pytest.param([(0, 0.0), (400, 2.0), (600, 3.0)], False, id="growing"),
        pytest.param([(0, 0.0), (40, 1.5)], False, id="old-at-the-end"),
        pytest.param([(500, 5.0), (520, 0.8)], True, id="backlog-draining"),
        pytest.param([], None, id="unreadable"),
    ],
)
def test_kept_up(samples: list[tuple[int, float]], kept_up: bool | None) -> None:
    report = QueueReport("q", [QueueSample(i, d, d, lag) for i, (d, lag) in enumerate(samples)], rate=100)
    assert report.kept_up is kept_up


def test_queue_watch_reads_depth_and_the_oldest_messages_age(redis_url: str, namespace: str) -> None:
    keys = KeyLayout(namespace=namespace)
    client = redis.Redis.from_url(redis_url)
    try:
        watch = QueueWatch(redis_url, keys, interval=0.05)
        empty = watch.sample()
        assert (empty.depth, empty.unfinished, empty.lag_s) == (0, 0, None)
        started = time.monotonic()  # the lag grows from here: the ages below are relative to this moment
        seconds, micros = client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        for age_ms in (3000, 1000):
            rid = str(uuid.uuid4())
            message = {"message_id": rid, "message_timestamp": now_ms - age_ms, "args": [], "kwargs": {}}
            client.hset(keys.messages, rid, MsgpackEncoder().encode(message))
            client.rpush(keys.queue, rid)
        client.hset(keys.messages, "running", b"x")  # taken by a worker: unfinished, not waiting
        watch.start(rate=10)
        deadline = started + 10  # a busy machine may sample late: wait for the samples, not a fixed time
        while len(watch.report.samples) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        report = watch.stop()
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert len(report.samples) >= 3 and report.failures == 0
    last = report.samples[-1]
    assert (last.depth, last.unfinished) == (2, 3)
    assert 3.0 <= last.lag_s <= 3.0 + elapsed + 0.5  # the oldest was 3 s old when it was written
    assert report.kept_up is False  # the oldest is 3 s old
