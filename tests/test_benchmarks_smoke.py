"""Keeps the benchmark machinery working: a tiny run must produce well-formed results.

Only the shape of the output is asserted, never a time: the figures depend on the machine.
Skipped when the ``bench`` extra (or a redis-server binary) is not installed.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

# `benchmarks` is a top-level folder of the repository, not part of the installed package.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

pytest.importorskip("hdrh", reason="the bench extra is not installed")
pytest.importorskip("matplotlib", reason="the bench extra is not installed")
pytest.importorskip("uvicorn", reason="the bench extra is not installed")

from benchmarks import runner  # noqa: E402
from benchmarks.payloads import auth_header, make_deliveries  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None and shutil.which("valkey-server") is None,
    reason="needs a redis-server binary for the private Redis",
)


def test_deliveries_follow_the_mix() -> None:
    deliveries = make_deliveries(40)
    kinds = [d.kind for d in deliveries]
    assert kinds.count("status") == 3 * kinds.count("message")
    assert all(d.body.startswith(b'{"object":"whatsapp_business_account"') for d in deliveries)
    assert auth_header().startswith("Basic ")


def test_tiny_run_writes_well_formed_results(tmp_path: Path) -> None:
    plan = replace(
        runner.quick_plan(),
        contenders=("wa-starlette", "floor-wsgi-gthread", "wa-flask-gthread"),
        fixed_rates=(50.0,),
        fixed_duration=0.5,
        fixed_warmup=0.1,
        search_start=100.0,
        search_cap=100.0,
        search_duration=0.3,
        search_warmup=0.1,
        search_only=("wa-starlette", "floor-wsgi-gthread", "wa-flask-gthread"),
        worker_messages=40,
        ordering_rounds=2,
        ordering_events=40,
        lag_rate=40.0,
        lag_duration=0.5,
        crash_deliveries=10,
        crash_rate=50.0,
        crash_contenders=("wa-starlette",),
        bodies=40,
        request_cpu_requests=40,
        request_cpu_rounds=1,
        cpu_rounds=1,
        cpu_rate=50.0,
        cpu_burst=0.3,
        capacity_rounds=2,
        capacity_burst=0.3,
        capacity_warmup=0.1,
        connections=4,
        drain_messages=40,
        soak_minutes=0.05,
        soak_rate=40.0,
        soak_connections=4,
    )
    out = runner.run(plan, tmp_path, port_range=(7180, 7199))

    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "quick"
    assert results["environment"]["cpu_count"] >= 1
    assert "wa-middleware" in results["environment"]["versions"]

    entry = results["http"]["wa-starlette"]
    assert entry["command"][:3][1:] == ["-m", "uvicorn"]
    assert entry["fixed"][0]["label"] == "50/s"
    for row in entry["fixed"] + entry["search"]["steps"]:
        for key in ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms", "errors", "non_200", "histogram"):
            assert key in row
        assert row["sent"] > 0
    assert entry["search"]["max_rps"] >= 0
    # Every fixed-rate row carries the server's CPU per request; the WSGI contender names its floor.
    assert all(row["server_cpu_us_per_request"] > 0 for row in entry["fixed"])
    wsgi = results["http"]["wa-flask-gthread"]
    assert wsgi["command"][2] == "gunicorn" and wsgi["floor"] == "floor-wsgi-gthread"
    assert results["http"]["floor-wsgi-gthread"]["command"][-4:] == wsgi["command"][-4:]  # same server settings
    rounds = results["cpu_rounds"]["servers"]
    assert set(rounds) == {"wa-starlette", "floor-wsgi-gthread", "wa-flask-gthread"}
    assert rounds["wa-flask-gthread"]["floor"] == "floor-wsgi-gthread"
    assert rounds["wa-flask-gthread"]["ratio_median"] > 0
    # Capacity rounds: every server answered 200s only, in each of the two rounds, with its CPU counted.
    capacity = results["capacity_rounds"]["servers"]
    assert set(capacity) == {"wa-starlette", "floor-wsgi-gthread", "wa-flask-gthread"}
    for row in capacity.values():
        assert len(row["ok_per_s"]) == 2 and min(row["ok_per_s"]) > 0 and row["not_ok"] == 0
        assert row["server_cpu_us_median"] > 0 and row["redis_cpu_us_median"] > 0
    assert capacity["wa-flask-gthread"]["floor"] == "floor-wsgi-gthread"
    assert capacity["wa-flask-gthread"]["ratio_min"] <= capacity["wa-flask-gthread"]["ratio_median"]
    cpu = results["request_cpu"]["figures"]
    assert set(cpu) == {"asgi", "asgi-floor", "asgi-lpush", "wsgi", "wsgi-floor", "wsgi-lpush"}
    assert all(value > 0 for row in cpu.values() for value in row.values())

    worker = results["worker"]
    assert set(worker) >= {"wa_middleware", "dramatiq_stock", "lag"}
    assert worker["wa_middleware"]["messages"] > 0

    ordering = results["ordering"]
    rounds = ordering.pop("rounds")
    assert set(ordering) == {"wa-unordered-20", "wa-ordered-20", "wa-ordered-1"}
    assert all(o["events"] == 40 and o["events_per_s"] > 0 for o in ordering.values())
    assert len(rounds["ratios"]) == len(rounds["unordered_per_cpu_s"]) == len(rounds["ordered_per_cpu_s"]) == 2
    assert min(rounds["ratios"]) <= rounds["median_ratio"] <= max(rounds["ratios"])
    crash = results["crash"]["wa-starlette"]
    assert crash["posted"] == 10
    assert crash["acknowledged"] <= crash["posted"]
    assert crash["lost"] == crash["acknowledged"] - crash["handled"]

    drain = results["drain"]
    assert drain["wa_middleware"]["completed"] == drain["dramatiq_stock"]["completed"] == 40
    assert drain["ratio"] > 0 and drain["state"]["bytes_per_event"] >= 0
    soak = results["soak"]
    assert set(soak["verdict"]) == {"standard", "once", "lag", "backlog", "memory"}
    assert soak["http"]["sent"] > 0 and soak["http"]["ok"] == soak["http"]["sent"]
    assert soak["callbacks"]["events_ran"] == soak["callbacks"]["events_expected"]
    assert (out / soak["file"]).exists() and (out / soak["plot"]).read_bytes()[:4] == b"\x89PNG"

    report = (out / "report.md").read_text()
    assert "## Latency at fixed rates" in report
    for line in (
        "worker >= 6,000 no-op single-event deliveries/s per process",
        "worker >= 3x stock dramatiq's",
        "Redis memory <= 24 bytes an event once drained",
        "## Worker drain, single-event deliveries",
        "soak, 40 deliveries/s for 0.05 min: every event once",
        "## Soak: the seed's load end to end",
    ):
        assert line in report
    assert "| wa-flask-gthread | gunicorn-gthread |" in report  # its ratio to the floor, side by side
    for section in ("## Server CPU per request, interleaved", "## Capacity, interleaved (closed loop)",
                    "## Request path CPU, in process", "## Targets"):  # fmt: skip
        assert section in report
    assert "PASS" in report or "FAIL" in report
    assert "ASGI request path in process, one at a time: CPU <= the floor app's" in report
    assert "wa-flask-gthread capacity >= 1.50x its floor's" in report
    assert "ordered (20 conversations) >= 0.80x unordered per CPU-second" in report
    for plot in ("latency_percentiles.png", "throughput.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_short_soak_runs_every_event_once_and_writes_its_results(tmp_path: Path) -> None:
    """The soak end to end (private Redis with AOF, uvicorn, a worker, the generator) for 4 s at a
    low rate: what it reports is asserted for its shape and for what is not a time (every event ran
    once, every answer a 200, memory per event and the keys left measured)."""
    from benchmarks import soak

    code = soak.main(["--minutes", "0.07", "--statuses", "90", "--messages", "10", "--processes", "1",
                      "--threads", "2", "--out", str(tmp_path)])  # fmt: skip
    (path,) = tmp_path.glob("soak-*.json")
    result = json.loads(path.read_text())
    assert code == 0
    assert result["http"]["ok"] == result["http"]["sent"] > 0
    callbacks = result["callbacks"]
    assert callbacks["events_expected"] == callbacks["events_ran"] >= result["http"]["sent"]
    assert callbacks["lag_samples"] > 0 and callbacks["lag_p99_ms"] is not None
    assert result["memory"]["per_event"] is not None
    assert any(":wa:dn" in kind for kind in result["memory"]["keys_left"])  # done-marks, not a hash per event
    assert result["timeline"]["http"] and result["timeline"]["worker"]
    assert list(tmp_path.glob("soak-*.png"))
