"""Decode benchmark: wa-middleware's typed events against json, orjson, untyped msgspec and pywa.

Every contender decodes the same bodies, side by side in one run: the whole shared corpus
(``../shared/payloads``, else ``tests/payloads``), and the part of it that pywa turns into a
typed update (pywa reads only the Cloud API envelope, and only the first change of a delivery),
so that the ratio to pywa compares like with like.

Rates are given in events per second, the events being those wa-middleware finds in the bodies
(the untyped contenders only build dicts, so for them the rate is "bodies' worth of events"),
and bodies per second. Each figure is the best of several rounds (the least disturbed by other
load on the machine).

Run: ``python -m benchmarks.decode_bench [--rounds N] [--min-time S]``; it prints a table and
writes ``benchmarks/results/decode-<timestamp>.json``. Needs the ``bench`` extra (orjson, pywa).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from wa_middleware import decode_delivery

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CORPORA = [ROOT.parent / "shared" / "payloads", ROOT / "tests" / "payloads"]

Decode = Callable[[bytes], Any]


def typed(body: bytes) -> Any:
    return decode_delivery(body)


def untyped_msgspec() -> Decode:
    return msgspec.json.Decoder().decode


def stdlib_json(body: bytes) -> Any:
    return json.loads(body)


def orjson_loads() -> Decode | None:
    try:
        import orjson
    except ImportError:
        return None
    return orjson.loads


def pywa_parser() -> Decode | None:
    """pywa's own update parsing: the raw update, its handler type, then the typed update."""
    try:
        import logging

        from pywa import WhatsApp
        from pywa.types.base_update import RawUpdate
    except ImportError:
        return None
    logging.getLogger("pywa").setLevel(logging.CRITICAL)  # it logs every update it finds odd
    client = WhatsApp(token="x", phone_id="1", server=None, filter_updates=False, validate_updates=False)

    def parse(body: bytes) -> Any:
        update = RawUpdate(body, hmac_header=None, update_hash="")
        handler = client._get_handler_type(update)
        if handler is None:
            return update
        return client._handlers_to_updates[handler].from_update(client=client, update=update)

    return parse


@dataclass
class Row:
    contender: str
    corpus: str
    bodies: int
    events: int
    seconds_per_pass: float
    events_per_s: float
    bodies_per_s: float


def measure(contenders: dict[str, Decode], bodies: list[bytes], rounds: int, min_time: float) -> dict[str, float]:
    """Best seconds per pass over ``bodies`` for each contender.

    Rounds interleave the contenders (one round of each, then the next), so that a burst of
    load from elsewhere on the machine hits them all alike; the best round of each is kept.
    """
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, decode in contenders.items():
            passes = 0
            gc.collect()
            started = time.perf_counter()
            while True:
                for body in bodies:
                    decode(body)
                passes += 1
                elapsed = time.perf_counter() - started
                if elapsed >= min_time:
                    break
            best[name] = min(best[name], elapsed / passes)
    return best


def pywa_subset(parse: Decode, bodies: list[bytes]) -> list[bytes]:
    kept = []
    for body in bodies:
        try:
            parse(body)
        except Exception:
            continue
        kept.append(body)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.1, help="seconds per round of one contender")
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args(argv)

    corpus = args.corpus or next(p for p in CORPORA if p.is_dir())
    bodies = [p.read_bytes() for p in sorted(corpus.glob("**/*.json"))]
    contenders: dict[str, Decode | None] = {
        "wa-middleware (typed)": typed,
        "msgspec (untyped)": untyped_msgspec(),
        "orjson.loads": orjson_loads(),
        "json.loads": stdlib_json,
        "pywa": pywa_parser(),
    }
    missing = [name for name, fn in contenders.items() if fn is None]
    sets = {"all": bodies}
    pywa = contenders["pywa"]
    if pywa is not None:
        sets["pywa-parsable"] = pywa_subset(pywa, bodies)

    rows: list[Row] = []
    for set_name, chosen in sets.items():
        events = sum(len(decode_delivery(b)) for b in chosen)
        present = {
            name: fn
            for name, fn in contenders.items()
            if fn is not None and (name != "pywa" or set_name == "pywa-parsable")
        }
        for name, seconds in measure(present, chosen, args.rounds, args.min_time).items():
            rows.append(Row(name, set_name, len(chosen), events, seconds, events / seconds, len(chosen) / seconds))

    ratios: dict[str, dict[str, float]] = {}
    for set_name in sets:
        by_name = {r.contender: r for r in rows if r.corpus == set_name}
        ours = by_name["wa-middleware (typed)"]
        ratios[set_name] = {
            f"typed vs {name}": ours.events_per_s / row.events_per_s for name, row in by_name.items() if row is not ours
        }

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corpus": str(corpus),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg": load,
        },
        "versions": _versions(),
        "rounds": args.rounds,
        "min_time": args.min_time,
        "missing": missing,
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"decode-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"corpus: {corpus} ({len(bodies)} bodies); load average {load[0]:.2f} on {os.cpu_count()} cpus")
    header = f"{'contender':24} {'bodies':>10} {'events/s':>12} {'bodies/s':>12} {'typed is':>10}"
    for set_name in sets:
        print(f"\n[{set_name}]\n{header}")
        for row in (r for r in rows if r.corpus == set_name):
            ratio = ratios[set_name].get(f"typed vs {row.contender}")
            shown = f"{ratio:.2f}x" if ratio is not None else "-"
            print(
                f"{row.contender:24} {row.bodies:>10} {row.events_per_s:>12,.0f} {row.bodies_per_s:>12,.0f} {shown:>10}"
            )
    if missing:
        print(f"\nnot measured (not installed): {', '.join(missing)}")
    print(f"\nwritten: {out}")
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("wa-middleware", "msgspec", "orjson", "pywa"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    raise SystemExit(main())
