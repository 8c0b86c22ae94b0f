"""Turn a run's raw figures into ``results.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["headline_table", "slo_pass", "write"]

#: The sender's SLO: median <= 250 ms and fewer than 1% of deliveries over 1 s.
SLO_MEDIAN_MS = 250.0
SLO_SLOW_FRACTION = 0.01

_TARGETS = {
    "p99_at_half_max_ms": 5.0,
    "worker_per_second": 2000.0,
    # The worker issue: ordered callbacks over 20 conversations within 20 % of unordered; one process
    # drains >= 6,000 no-op single-event deliveries/s, 3x stock dramatiq's no-op rate side by side; the
    # once-per-event state <= 24 bytes an event once drained.
    "ordered_ratio": 0.80,
    "drain_per_second": 6000.0,
    "drain_ratio": 3.0,
    "bytes_per_event": 24.0,
    #: The one-at-a-time ASGI request path costs no more CPU than the floor's single LPUSH.
    "request_cpu_ratio": 1.0,
}
#: Max throughput of each wa-middleware contender at least this many times its floor's (same
#: server, same settings, same run): the ASGI ones since the first report, the WSGI ones issue 17.
_FLOOR_TARGETS = {"wa-starlette": 0.80, "wa-fastapi": 0.80, "wa-flask-sync": 1.0, "wa-flask-gthread": 1.5}
#: The ASGI contenders held to the p99-at-half-max target.
_TAIL_TARGETS = ("wa-starlette", "wa-fastapi")


def slo_pass(row: dict[str, Any]) -> bool:
    """The sender's SLO at the tested rate; a run with no answer at all fails it."""
    p50 = row.get("p50_ms", math.nan)
    return not math.isnan(p50) and p50 <= SLO_MEDIAN_MS and row.get("over_1s_fraction", 1.0) < SLO_SLOW_FRACTION


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _max(http: dict[str, Any], name: str) -> float | None:
    search = http.get(name, {}).get("search")
    return float(search["max_rps"]) if search else None


def _fixed(http: dict[str, Any], name: str, label: str) -> dict[str, Any] | None:
    for row in http.get(name, {}).get("fixed", []):
        if row["label"] == label:
            return dict(row)
    return None


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}"


def _round_ratio(row: dict[str, Any]) -> str:
    """The floor, the median ratio to it and the range, as three cells of an interleaved-rounds row."""
    if "ratio_median" not in row:
        return " |  | "
    return f"{row['floor']} | {row['ratio_median']:.2f} | {row['ratio_min']:.2f}-{row['ratio_max']:.2f}"


def headline_table(results: dict[str, Any]) -> str:
    """Max throughput and p50/p99 at 200 req/s per contender: the table the README shows."""
    http = results.get("http", {})
    lines = [
        "| contender | max req/s (p99 < 50 ms) | p50 @ 200/s (ms) | p99 @ 200/s (ms) | SLO @ 200/s |",
        "|---|---:|---:|---:|:---:|",
    ]
    for name in http:
        row = _fixed(http, name, "200/s")
        best = _max(http, name)
        lines.append(
            f"| {name} | {_f(best, 0) if best is not None else 'not searched'} | "
            f"{_f(row['p50_ms']) if row else '-'} | {_f(row['p99_ms']) if row else '-'} | "
            f"{('PASS' if slo_pass(row) else 'FAIL') if row else '-'} |"
        )
    return "\n".join(lines)


def _markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    http: dict[str, Any] = results.get("http", {})
    out: list[str] = [f"# wa-middleware benchmark report ({results['mode']} run, {results['started_utc']})", ""]
    if results["mode"] == "quick":
        out += ["> Quick run: short steps and few rates. Indicative only; use the full run for figures to quote.", ""]
    out += [
        f"- Machine: {env['platform']}, {env['cpu_count']} CPUs, load average at start {env['load_average_at_start']}",
        f"- Redis: {env['redis'].get('version', '?')} {' '.join(env['redis'].get('flags', [])) or env['redis']['url']}",
        "- One durable Redis write, sequential round trip (ms): "
        + "; ".join(
            f"{when[len('write_latency_') :].replace('_', ' ')}: "
            f"p50 {v['p50_ms']}, p99 {v['p99_ms']}, max {v['max_ms']}"
            for when, v in env["redis"].items()
            if when.startswith("write_latency_")
        ),
        f"- Load generator: {env['loadgen']['kind']}; {env['loadgen']['connections']} keep-alive connections, "
        f"{env['loadgen']['processes']} process(es)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- Elapsed: {results.get('elapsed_s', '?')} s",
        "",
        "## Headline",
        "",
        headline_table(results),
        "",
        "## Max sustainable throughput",
        "",
        "The highest rate at which p99 stayed under 50 ms with no error and no non-200 (stepped up, then bisected; "
        "a marginal failure is measured once more before it counts).",
        "",
        "| contender | server | max req/s | first failing req/s | note |",
        "|---|---|---:|---:|---|",
    ]
    for name, entry in http.items():
        search = entry.get("search")
        if not search:
            continue
        notes = []
        if search["capped_at_search_limit"]:
            notes.append("reached the search cap: at least this")
        if search["generator_limited"]:
            notes.append("generator fell behind at the top: treat as a lower bound")
        out.append(
            f"| {name} | {entry['server']} | {_f(search['max_rps'], 0)} | {_f(search['first_failing_rps'], 0)} | "
            f"{'; '.join(notes)} |"
        )

    out += [
        "",
        "## Ratios (same run, same machine)",
        "",
        "Each wa-middleware contender's max throughput next to its floor's and its ceiling's: the same server with "
        "the same settings, a bare app plus one `LPUSH` (floor) and a bare app (ceiling).",
        "",
        "| contender | server | max req/s | floor | / floor | target | ceiling | / ceiling |",
        "|---|---|---:|---|---:|---|---|---:|",
    ]
    for name, entry in http.items():
        floor_name, ceiling_name = entry.get("floor"), entry.get("ceiling")
        if entry["role"] != "wa" or not floor_name:
            continue
        wa_max, floor_max, ceiling_max = _max(http, name), _max(http, floor_name), _max(http, ceiling_name or "")
        if wa_max is None:
            continue
        target = _FLOOR_TARGETS.get(name)
        verdict = ""
        if target is not None and floor_max:
            verdict = f">= {target:.2f} {'MET' if wa_max / floor_max >= target else 'MISSED'}"
        out.append(
            f"| {name} | {entry['server']} | {_f(wa_max, 0)} | {floor_name} ({_f(floor_max, 0)}) | "
            f"{_ratio(wa_max, floor_max)} | {verdict} | {ceiling_name or '-'} ({_f(ceiling_max, 0)}) | "
            f"{_ratio(wa_max, ceiling_max)} |"
        )
    pywa_max = _max(http, "pywa-async")
    for name in ("wa-starlette", "wa-fastapi"):
        wa_max = _max(http, name)
        if wa_max and pywa_max:
            out.append(f"| {name} / pywa-async | uvicorn | {_f(wa_max, 0)} | pywa-async ({_f(pywa_max, 0)}) | "
                       f"{_ratio(wa_max, pywa_max)} | about 4 | | |")  # fmt: skip
    labels = [row["label"] for row in http.get("wa-starlette-100ms", {}).get("fixed", [])]
    handler_rows = []
    for pywa in ("pywa-async-100ms", "pywa-sync-100ms"):
        for label in labels:
            mine, theirs = _fixed(http, "wa-starlette-100ms", label), _fixed(http, pywa, label)
            if mine and theirs and mine["label"] != "50% max":
                handler_rows.append(
                    f"| {pywa} p50 / wa-starlette-100ms p50 @ {label} | {_ratio(theirs['p50_ms'], mine['p50_ms'])} |"
                )
    if handler_rows:
        out += ["", "With 100 ms handlers:", "", "| ratio | value |", "|---|---:|", *handler_rows]

    out += [
        "",
        "## Latency at fixed rates",
        "",
        "Latency from the *scheduled* send time (open loop), in ms. SLO: median <= 250 ms and < 1% over 1 s "
        "(errors count as over 1 s).",
        "",
        "| contender | rate | p50 | p90 | p99 | p99.9 | max | errors | non-200 | over 1 s | SLO |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for name, entry in http.items():
        for row in entry["fixed"]:
            label = row["label"] if row["label"] != "50% max" else f"50% max ({row['rate']:.0f}/s)"
            out.append(
                f"| {name} | {label} | {_f(row['p50_ms'])} | {_f(row['p90_ms'])} | {_f(row['p99_ms'])} | "
                f"{_f(row['p99_9_ms'])} | {_f(row['max_ms'])} | {row['errors']} | {row['non_200']} | "
                f"{row['over_1s_fraction'] * 100:.2f}% | {'PASS' if slo_pass(row) else 'FAIL'} |"
            )

    rounds = results.get("cpu_rounds", {})
    if rounds.get("servers"):
        out += [
            "",
            "## Server CPU per request, interleaved",
            "",
            f"{rounds['rounds']} rounds; in each, {rounds['burst_s']} s at {rounds['rate']:.0f} req/s to every server "
            "below in turn (the order reversed every other round), so that the rest of the machine's load falls on "
            "all of them alike. CPU time of all the server's processes per request sent, in microseconds; the ratio "
            "to the floor is taken round by round (median, and the range).",
            "",
            "| contender | CPU us/request (median) | floor | / floor (median) | range | p99 ms (median) |",
            "|---|---:|---|---:|---|---:|",
        ]
        for name, row in rounds["servers"].items():
            out.append(f"| {name} | {_f(row['median_us'], 0)} | {_round_ratio(row)} | "
                       f"{_f(row['p99_ms_median'])} |")  # fmt: skip

    capacity = results.get("capacity_rounds", {})
    if capacity.get("servers"):
        out += [
            "",
            "## Capacity, interleaved (closed loop)",
            "",
            f"{capacity['rounds']} rounds; in each, every server below in turn (the order reversed every other round) "
            f"gets {capacity['connections']} clients that each send the next delivery as soon as the last one is "
            f"answered, for {capacity['burst_s']} s (`benchmarks/capacity.py`, the figure `wrk` gives): 200s per "
            "second. Unlike the searched maximum, it needs no latency threshold, so a hiccup moves it a little rather "
            "than by a whole search step; the ratio to the floor is taken round by round (the two measured seconds "
            "apart). CPU per answer: all the server's processes, and Redis, over the burst.",
            "",
            "| contender | 200s/s (median) | floor | / floor (median) | range | server CPU us/answer "
            "| Redis CPU us/answer | not 200 |",
            "|---|---:|---|---:|---|---:|---:|---:|",
        ]
        for name, row in capacity["servers"].items():
            out.append(f"| {name} | {_f(row['median_ok_per_s'], 0)} | {_round_ratio(row)} | "
                       f"{_f(row.get('server_cpu_us_median'), 0)} | {_f(row.get('redis_cpu_us_median'), 0)} | "
                       f"{row['not_ok']} |")  # fmt: skip

    cpu_labels: list[str] = []
    for entry in http.values():
        for row in entry["fixed"]:
            if "server_cpu_us_per_request" in row and row["label"] not in cpu_labels:
                cpu_labels.append(row["label"])
    if cpu_labels:
        out += [
            "",
            "## Server CPU per request, by fixed rate",
            "",
            "CPU time of all the server's processes during each fixed-rate run (warm-up included), divided by the "
            "requests sent, in microseconds; in brackets, over the contender's floor at the same rate. Less disturbed "
            "by a busy machine than latency, though not immune: compare within one run.",
            "",
            "| contender | " + " | ".join(cpu_labels) + " |",
            "|---|" + "---:|" * len(cpu_labels),
        ]
        for name, entry in http.items():
            cells = []
            for label in cpu_labels:
                row, floor_row = _fixed(http, name, label), _fixed(http, entry.get("floor") or "", label)
                value = row.get("server_cpu_us_per_request") if row else None
                base = floor_row.get("server_cpu_us_per_request") if floor_row and label != "50% max" else None
                cells.append(_f(value, 0) + (f" ({value / base:.2f}x)" if value and base else ""))
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    if results.get("request_cpu"):
        from .request_cpu import table

        out += [
            "",
            "## Request path CPU, in process",
            "",
            "`python -m benchmarks.request_cpu` run inside this one: the middleware called directly (no server, no "
            "client sockets) against a private Redis (`appendfsync no`), x1 = one request at a time, xN = N in "
            "flight (ASGI: tasks on one loop; WSGI: threads); best of the rounds, interleaved. In brackets: over the "
            "floor (the floor contender's bare app, called the same way); the `LPUSH` alone for reference.",
            "",
            table(results["request_cpu"]),
        ]

    out += ["", "## Targets", "", "| target | measured | verdict |", "|---|---|:---:|"]
    for name, target in _FLOOR_TARGETS.items():
        entry = http.get(name, {})
        wa_max, floor_max = _max(http, name), _max(http, entry.get("floor") or "")
        if wa_max and floor_max:
            ok = wa_max / floor_max >= target
            out.append(f"| {name} searched max >= {target:.2f}x its floor's ({entry['floor']}; one search each) | "
                       f"{wa_max / floor_max:.2f}x | {'MET' if ok else 'MISSED'} |")  # fmt: skip
        row = capacity.get("servers", {}).get(name, {})
        if "ratio_median" in row:
            ok = row["ratio_median"] >= target
            # What no middleware can pass: the bare app with no write at all, served the same way.
            bound = ""
            ceiling_row = capacity["servers"].get(entry.get("ceiling") or "", {})
            floor_row = capacity["servers"].get(row["floor"], {})
            top, base = ceiling_row.get("median_ok_per_s"), floor_row.get("median_ok_per_s")
            if top and base:
                bound = f"; the bare app, no write: {top / base:.2f}x"
            spread = f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}{bound}"
            out.append(f"| {name} capacity >= {target:.2f}x its floor's ({row['floor']}; median of "
                       f"{capacity['rounds']} interleaved rounds) | {row['ratio_median']:.2f}x ({spread}) | "
                       f"{'MET' if ok else 'MISSED'} |")  # fmt: skip
    for name in _TAIL_TARGETS:
        half = _fixed(http, name, "50% max")
        if half:
            ok = half["p99_ms"] <= _TARGETS["p99_at_half_max_ms"]
            out.append(
                f"| {name} p99 <= {_TARGETS['p99_at_half_max_ms']:.0f} ms at half its max ({half['rate']:.0f}/s) | "
                f"{_f(half['p99_ms'])} ms | {'MET' if ok else 'MISSED'} |"
            )
    cpu = results.get("request_cpu", {}).get("figures", {})
    for name, row in rounds.get("servers", {}).items():
        if name in _TAIL_TARGETS and "ratio_median" in row:  # the ASGI contenders
            ok = row["ratio_median"] <= _TARGETS["request_cpu_ratio"]
            out.append(f"| {name}: server CPU per request at {rounds['rate']:.0f} req/s <= its floor's | "
                       f"{row['ratio_median']:.2f}x (median of {rounds['rounds']} interleaved rounds, "
                       f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}) | {'MET' if ok else 'MISSED'} |")  # fmt: skip
    for kind in ("asgi",):
        mine, floor_cpu = cpu.get(kind, {}).get("1"), cpu.get(f"{kind}-floor", {}).get("1")
        lpush = cpu.get(f"{kind}-lpush", {}).get("1")
        if mine and floor_cpu:
            ok = mine / floor_cpu <= _TARGETS["request_cpu_ratio"]
            alone = f"; the LPUSH alone {lpush:,.1f} us, {mine / lpush:.2f}x" if lpush else ""
            out.append(f"| {kind.upper()} request path in process, one at a time: CPU <= the floor app's | "
                       f"{mine:,.1f} us vs {floor_cpu:,.1f} us ({mine / floor_cpu:.2f}x{alone}) | "
                       f"{'MET' if ok else 'MISSED'} |")  # fmt: skip
    worker = results.get("worker", {})
    if "wa_middleware" in worker:
        w = worker["wa_middleware"]
        rate = w.get("callbacks_per_second", w["per_second"])
        ok = rate >= _TARGETS["worker_per_second"]
        out.append(f"| worker >= 2,000 no-op callbacks/s per process | {_f(rate, 0)} callbacks/s "
                   f"({_f(w['per_second'], 0)} deliveries/s) | {'MET' if ok else 'MISSED'} |")  # fmt: skip
    ordering_rounds = results.get("ordering", {}).get("rounds") or {}
    if ordering_rounds.get("median_ratio") is not None:
        ratios = ordering_rounds["ratios"]
        ok = ordering_rounds["median_ratio"] >= _TARGETS["ordered_ratio"]
        out.append(f"| ordered (20 conversations) >= {_TARGETS['ordered_ratio']:.2f}x unordered per CPU-second | "
                   f"{ordering_rounds['median_ratio']:.2f}x (median of {len(ratios)} interleaved rounds, "
                   f"{min(ratios):.2f}-{max(ratios):.2f}) | {'MET' if ok else 'MISSED'} |")  # fmt: skip
    drain = results.get("drain", {})
    if "wa_middleware" in drain:
        rate = drain["wa_middleware"]["per_second"]
        ok = rate >= _TARGETS["drain_per_second"]
        out.append(f"| worker >= {_TARGETS['drain_per_second']:,.0f} no-op single-event deliveries/s per process "
                   f"({drain['messages']:,} drained, AOF always) | {_f(rate, 0)} deliveries/s | "
                   f"{'MET' if ok else 'MISSED'} |")  # fmt: skip
    if "ratio" in drain:
        ok = drain["ratio"] >= _TARGETS["drain_ratio"]
        out.append(f"| worker >= {_TARGETS['drain_ratio']:.0f}x stock dramatiq's no-op messages/s, same run | "
                   f"{drain['ratio']:.2f}x ({_f(drain['dramatiq_stock']['per_second'], 0)}/s) | "
                   f"{'MET' if ok else 'MISSED'} |")  # fmt: skip
    soak = results.get("soak", {})
    if soak:
        verdict, http, callbacks = soak["verdict"], soak["http"], soak["callbacks"]
        label = f"soak, {soak['settings']['rate']:,.0f} deliveries/s for {soak['settings']['minutes']:g} min"
        rows = [
            ("the sender's standard held (p50 <= 250 ms, < 1 % over 1 s, every answer 200)", "standard",
             f"p50 {http['p50_ms']} ms, {100 * http['over_1s_share']:.2f} % over 1 s, "
             f"{http['ok']:,} of {http['sent']:,} answered 200"),
            ("lag from the 200 to the callback start p99 <= 1 s", "lag", f"p99 {callbacks['lag_p99_ms']} ms"),
            ("every event once", "once", f"{callbacks['events_ran']:,} of {_f(callbacks['events_expected'], 0)} ran, "
             f"{callbacks['stats'].get('duplicates', 0)} twice"),
            ("no growing backlog (drained within 10 s of the load's end)", "backlog",
             f"at most {callbacks['max_depth']:,} waiting; drained {callbacks['drained_after_load_s']} s after"),
            (f"Redis memory <= {_TARGETS['bytes_per_event']:.0f} bytes an event once drained", "memory",
             f"{soak['memory']['per_event']} bytes"),
        ]  # fmt: skip
        for what, key, measured in rows:
            out.append(f"| {label}: {what} | {measured} | {'MET' if verdict[key] else 'MISSED'} |")
    crash = results.get("crash", {})
    for name, outcome in crash.items():
        if name.startswith("wa-"):
            out.append(f"| {name}: zero acknowledged events lost | {outcome['lost']} lost | "
                       f"{'MET' if outcome['lost'] == 0 else 'MISSED'} |")  # fmt: skip

    if worker:
        out += [
            "",
            "## Worker side",
            "",
            "| worker | messages | messages/s | callbacks/s | boot (s) | command |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name in ("wa_middleware", "dramatiq_stock"):
            if name in worker:
                w = worker[name]
                out.append(
                    f"| {name} | {w['completed']}/{w['messages']} | {_f(w['per_second'], 0)} | "
                    f"{_f(w.get('callbacks_per_second', w['per_second']), 0)} | {w['boot_seconds']} | "
                    f"`{w['command']}` |"
                )
        if "wa_middleware" in worker and "dramatiq_stock" in worker and worker["dramatiq_stock"]["per_second"]:
            ratio = worker["wa_middleware"]["per_second"] / worker["dramatiq_stock"]["per_second"]
            out += ["", f"wa-middleware / stock dramatiq: {ratio:.2f} (a wa-middleware message is one delivery: "
                    f"{worker['wa_middleware'].get('callbacks_per_delivery', '?')} callbacks on average)."]  # fmt: skip
        lag = worker.get("lag", {})
        if lag.get("samples"):
            out += ["", f"Lag from acceptance to callback start at {lag['rate']:.0f} req/s with one worker running: "
                    f"p50 {lag['p50_ms']} ms, p99 {lag['p99_ms']} ms, max {lag['max_ms']} ms "
                    f"({lag['samples']} callbacks; millisecond resolution)."]  # fmt: skip

    ordering = results.get("ordering", {})
    if ordering:
        out += [
            "",
            "## What ordering costs (one worker process, 8 threads, no-op callbacks)",
            "",
            "| case | conversations | events | events/s | events per CPU-second |",
            "|---|---:|---:|---:|---:|",
        ]
        rounds = ordering.get("rounds") or {}
        for key, o in ordering.items():
            if key == "rounds":
                continue
            out.append(
                f"| {o['case']} | {o['conversations']} | {o['events']} | {o['events_per_s']} | "
                f"{o['events_per_cpu_s'] if o['events_per_cpu_s'] is not None else '-'} |"
            )
        ratios = rounds.get("ratios") or []
        if ratios:
            out += ["", f"Ordered / unordered over 20 interleaved conversations, per CPU-second of the worker, "
                    f"round by round ({len(ratios)} interleaved rounds; the table keeps each case's median "
                    f"round): median **{rounds['median_ratio']:.2f}** ({min(ratios):.2f}-{max(ratios):.2f}); "
                    "target >= 0.80. One conversation is strictly serial by definition."]  # fmt: skip

    if drain:
        out += [
            "",
            "## Worker drain, single-event deliveries (one process, 8 threads, no-op callbacks)",
            "",
            f"{drain['messages']:,} deliveries of the sender's mix (10 statuses to 1 message, unique ids) preloaded "
            "into a private redis-server (AOF, `appendfsync always`), then drained by one worker process; the same "
            "count of no-op messages then drained by stock dramatiq (`-p 1 -t 8`), on the same server.",
            "",
            "| worker | drained | seconds | per second | worker CPU per second |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in ("wa_middleware", "dramatiq_stock"):
            if name in drain:
                d = drain[name]
                out.append(f"| {name} | {d['completed']:,}/{d['messages']:,} | {d['seconds']} | "
                           f"{_f(d['per_second'], 0)} | {d.get('cpu_per_second', '-')} |")  # fmt: skip
        if "ratio" in drain:
            out += ["", f"wa-middleware / stock dramatiq: **{drain['ratio']:.2f}x**."]
        if "state" in drain:
            state = drain["state"]
            out += ["", f"Redis memory left once drained: {state['bytes_per_event']} bytes an event "
                    f"({state['keys']} keys of once-per-event state; over {drain['messages']:,} events the "
                    "fixed costs of those keys weigh in: the soak measures the state over millions)."]  # fmt: skip

    if soak:
        settings, http, callbacks, memory = soak["settings"], soak["http"], soak["callbacks"], soak["memory"]
        cores = soak.get("cores", {})
        out += [
            "",
            f"## Soak: the seed's load end to end ({settings['rate']:,.0f} deliveries/s, {settings['minutes']:g} min)",
            "",
            f"One uvicorn process, `wa-middleware worker -p {settings['processes']} -t {settings['threads']}`, a "
            "private redis-server (AOF, `appendfsync always`) and the load generator, all on this machine "
            f"({settings['connections']} connections). Timeline: [{soak['file']}]({soak['file']}).",
            "",
            "| | measured |",
            "|---|---:|",
            f"| deliveries answered 200 | {http['ok']:,} of {http['sent']:,} |",
            f"| HTTP p50 / p99 / max | {http['p50_ms']} / {http['p99_ms']} / {http['max_ms']} ms |",
            f"| over 1 s | {100 * http['over_1s_share']:.2f} % |",
            f"| events run | {callbacks['events_ran']:,} of {_f(callbacks['events_expected'], 0)} |",
            f"| lag from the 200 to the callback start, p50 / p99 / max | {callbacks['lag_p50_ms']} / "
            f"{callbacks['lag_p99_ms']} / {callbacks['lag_max_ms']} ms |",
            f"| backlog | at most {callbacks['max_depth']:,} deliveries not finished; drained "
            f"{callbacks['drained_after_load_s']} s after the load |",
            f"| Redis memory once drained | {memory['per_event']} bytes an event |",
        ]
        if cores:
            shown = ", ".join(f"{name} {value}" for name, value in cores.items())
            out.append(f"| cores (CPU seconds per second of load) | {shown} |")
        out += ["", f"![soak timeline]({soak['plot']})"]

    if crash:
        out += [
            "",
            "## Crash durability",
            "",
            "Handlers take 100 ms; the web process is killed with SIGKILL right after the last 200.",
            "",
            "| contender | posted | acknowledged (200) | handled | lost | kill delay (ms) | note |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, c in crash.items():
            out.append(
                f"| {name} | {c['posted']} | {c['acknowledged']} | {c['handled']} | **{c['lost']}** | "
                f"{c['kill_delay_ms']:.1f} | {c['notes']} |"
            )
    out += [
        "",
        "## Plots",
        "",
        "![latency by percentile](latency_percentiles.png)",
        "",
        "![max throughput](throughput.png)",
        "",
    ]
    return "\n".join(out)


def _plots(results: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    http: dict[str, Any] = results.get("http", {})
    written = []
    labels: list[str] = []
    for entry in http.values():
        for row in entry["fixed"]:
            if row["label"] not in labels and row["label"] != "50% max":
                labels.append(row["label"])
    # One colour per contender, the same in every panel; the reference apps dashed.
    palette = [plt.get_cmap("tab20")(i) for i in range(20)]
    colours = {name: palette[(2 * i) % 20 + (2 * i) // 20] for i, name in enumerate(http)}
    if labels:
        fig, axes = plt.subplots(1, len(labels), figsize=(5.5 * len(labels) + 2, 4.5), squeeze=False)
        for ax, label in zip(axes[0], labels, strict=True):
            for name in http:
                row = _fixed(http, name, label)
                if not row or not row["percentile_curve"]:
                    continue
                # x: the "number of nines" of the percentile, so the tail gets room; 100% is drawn at 5.
                xs = [-math.log10(max(1e-5, 1 - p / 100)) for p, _ in row["percentile_curve"]]
                ys = [max(v, 0.01) for _, v in row["percentile_curve"]]
                style = "--" if http[name]["role"] in ("ceiling", "floor") else "-"
                ax.plot(xs, ys, style, marker=".", label=name, color=colours[name])
            ax.set_yscale("log")
            ticks = [0, 1, 2, 3, 4, 5]
            ax.set_xticks(ticks, ["0%", "90%", "99%", "99.9%", "99.99%", "max"])
            ax.set_xlabel("percentile")
            ax.set_ylabel("latency from scheduled send (ms)")
            ax.set_title(f"latency at {label}")
            ax.axhline(50, color="grey", linestyle=":", linewidth=1)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.tight_layout()
        fig.savefig(out_dir / "latency_percentiles.png", dpi=100)
        plt.close(fig)
        written.append("latency_percentiles.png")

    searched = [(name, e["search"]["max_rps"]) for name, e in http.items() if e.get("search")]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(searched) + 2), 4))
    if searched:
        names, values = zip(*searched, strict=True)
        role_colour = {"ceiling": "#999", "floor": "#666", "wa": "#3a7", "peer": "#47b"}
        bars = ax.bar(names, values, color=[role_colour.get(http[n]["role"], "#3a7") for n in names])
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.tick_params(axis="x", rotation=30)
    ax.set_ylabel("max req/s with p99 < 50 ms")
    ax.set_title("max sustainable throughput")
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=100)
    plt.close(fig)
    written.append("throughput.png")
    return written


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _unclean(value: Any, key: str = "") -> Any:
    """Undo `_clean` for figures: a null latency was a NaN (no sample)."""
    if value is None and key.endswith("_ms"):
        return math.nan
    if isinstance(value, dict):
        return {k: _unclean(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_unclean(v) for v in value]
    return value


def write(results: dict[str, Any], out_dir: Path) -> None:
    """Write results.json, report.md and the plots into ``out_dir``."""
    results["plots"] = _plots(results, out_dir)
    (out_dir / "report.md").write_text(_markdown(results))
    (out_dir / "results.json").write_text(json.dumps(_clean(results), indent=1, sort_keys=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.report RESULTS_DIR``: rewrite report.md and the plots from
    results.json (after editing the report code), and print the headline table."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmarks.report RESULTS_DIR", file=sys.stderr)
        return 2
    out_dir = Path(args[0])
    results = _unclean(json.loads((out_dir / "results.json").read_text()))
    write(results, out_dir)
    print(headline_table(results))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
