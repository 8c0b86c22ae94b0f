"""``wa-middleware loadtest URL``: an open-loop load test of a webhook endpoint, judged by the sender's standard.

Argument parsing and printing only; the engine is `wa_middleware.ops.loadtest`. The deliveries are
built here with `wa_middleware.testing`'s builders (the ``ops`` wing may not import the testing
kit, which sits on top of everything), as templates whose ids the engine makes unique per request.

Exit codes: 0 the run met the sender's standard; 1 it did not (or the probe request was not
answered 200); 2 bad usage; 3 no answer at all (connection refused, DNS, TLS, the broker); 130
interrupted (Ctrl-C: what was sent until then is reported and written all the same).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any, TextIO

from ..ops import loadtest as engine

__all__ = ["EXIT_CONNECTION", "EXIT_FAIL", "EXIT_INTERRUPTED", "EXIT_PASS", "EXIT_USAGE", "add_parser", "sender_mix"]

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_INTERRUPTED = 130

#: How long the sender waits for an answer before it gives up and delivers again later.
SENDER_TIMEOUT = 5.0

#: Environment variables read when the matching option is not given (argv is visible to `ps`).
ENV_BASIC_AUTH = "WA_LOADTEST_BASIC_AUTH"
ENV_DIALOG360_SECRET = "WA_LOADTEST_DIALOG360_SECRET"
ENV_META_APP_SECRET = "WA_LOADTEST_META_APP_SECRET"

_TEMPLATES = 240
_WORDS = (
    "hello order delivery tomorrow please confirm address thanks payment received invoice where is my "
    "package can you call me back later the price of the blue one size medium available today"
).split()


class _Usage(Exception):
    pass


# -- the deliveries ---------------------------------------------------------------------------


def sender_mix(status_share: float, *, count: int = _TEMPLATES, run: str | None = None) -> tuple[bytes, ...]:
    """``count`` delivery bodies in the sender's proportions, ``status_share`` of them statuses.

    Statuses cycle through sent, delivered and read (one in 50 failed); one status delivery in 20
    carries 2 to 5 statuses at once, as WhatsApp batches them. Incoming messages are texts of
    varied length, images, voice notes, documents, locations, stickers, reactions and replies to
    buttons and lists. Every id carries `wa_middleware.ops.loadtest.UNIQUE`, which the engine
    replaces by the request's number, and ``run`` (random by default): no two deliveries of one
    run, or of two runs, share an id.
    """
    from .. import testing

    if not 0 <= status_share <= 1:
        raise ValueError("status_share is a fraction")
    token = run or uuid.uuid4().hex[:10]
    seq = engine.UNIQUE.decode()
    bodies: list[bytes] = []
    statuses = messages = 0
    for i in range(count):
        # Spread the statuses evenly among the messages (Bresenham), in the exact proportion.
        is_status = math.floor((i + 1) * status_share) > math.floor(i * status_share)
        ids = (f"wamid.LT{token}.{seq}.{j}" for j in range(10))
        sender = f"49151{(i * 7919) % 10_000_000:07d}"
        if is_status:
            batch = 2 + statuses % 4 if statuses % 20 == 7 else 1
            parts = [
                testing.status(
                    "failed" if (statuses + j) % 50 == 49 else ("sent", "delivered", "read")[(statuses + j) % 3],
                    message_id=next(ids),
                    recipient=f"49152{(i * 104729 + j) % 10_000_000:07d}",
                )
                for j in range(batch)
            ]
            bodies.append(testing.delivery(*parts).to_bytes())
            statuses += 1
        else:
            bodies.append(_message(testing, messages, next(ids), sender).to_bytes())
            messages += 1
    return tuple(bodies)


def _message(testing: Any, n: int, message_id: str, sender: str) -> Any:
    kind = n % 12
    common: dict[str, Any] = {"id": message_id, "sender": sender}
    if kind == 4:  # a location's ``name`` is the place's
        return testing.location(name="Shop", address="Main Street 1", **common)
    common["name"] = " ".join(w.capitalize() for w in _WORDS[n % 20 : n % 20 + 2])
    if kind == 1:
        return testing.image(caption="the blue one", **common)
    if kind == 2:
        return testing.audio(**common)
    if kind == 3:
        return testing.document(filename="invoice.pdf", caption="invoice", **common)
    # button_reply() and list_reply() take ``id`` for the button's: their message id goes through message().
    if kind == 5:
        reply = {"type": "button_reply", "button_reply": {"id": f"confirm-{n}", "title": "Confirm"}}
        return testing.message("interactive", reply, reply_to=f"wamid.LTSENT{n}", **common)
    if kind == 6:
        row = {"id": f"size-m-{n}", "title": "Medium", "description": "size"}
        reply = {"type": "list_reply", "list_reply": row}
        return testing.message("interactive", reply, reply_to=f"wamid.LTSENT{n}", **common)
    if kind == 7:
        return testing.reaction(f"wamid.LTSENT{n}", **common)
    if kind == 8:
        return testing.sticker(**common)
    # Half the messages are texts, from a word to a long paragraph.
    words = 1 + (n * 37) % 160
    return testing.text(" ".join(_WORDS[(n + w) % len(_WORDS)] for w in range(words)), **common)


# -- options ----------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``loadtest`` to the ``wa-middleware`` parser."""
    parser = sub.add_parser(
        "loadtest",
        help="open-loop load test of a webhook endpoint, judged by the sender's standard",
        description="Sends realistic deliveries to URL at a fixed rate, whatever the answers, and judges the "
        f"answers as the sender does: a median within {engine.SLO_MEDIAN_MS:g} ms, fewer than "
        f"{engine.SLO_SHARE:.0%} late (over {engine.SLOW_S:g} s), not a 200 or not answered. "
        "Point it only at servers you own.",
    )
    parser.add_argument("url", metavar="URL", help="the endpoint, e.g. https://example.com/webhook")
    load = parser.add_argument_group("load")
    load.add_argument(
        "--rate", type=float, help="deliveries per second, three status deliveries for each message delivery"
    )
    load.add_argument(
        "--outgoing",
        type=float,
        metavar="N",
        help="messages you send per second: 3N status deliveries (sent, delivered, read); with --incoming",
    )
    load.add_argument("--incoming", type=float, metavar="M", help="messages you receive per second: M deliveries")
    load.add_argument("--duration", type=float, default=30.0, help="seconds measured (default: 30)")
    load.add_argument("--warmup", type=float, default=1.0, help="seconds sent before measuring (default: 1)")
    load.add_argument("--connections", type=int, default=64, help="keep-alive connections at most (default: 64)")
    load.add_argument(
        "--processes",
        type=int,
        default=1,
        help="generator processes sharing the load (default: 1); more when it falls behind",
    )
    load.add_argument(
        "--timeout",
        type=float,
        default=SENDER_TIMEOUT,
        help=f"seconds before an unanswered request counts as an error (default: {SENDER_TIMEOUT:g}, the sender's)",
    )
    auth = parser.add_argument_group("auth, as the webhook expects it (several combine, as AllOf)")
    auth.add_argument("--basic-auth", metavar="USER:PASS", help=f"'Authorization: Basic ...' (or ${ENV_BASIC_AUTH})")
    auth.add_argument(
        "--header",
        "-H",
        metavar="NAME:VALUE",
        action="append",
        default=[],
        help="a header on every request: a header token (HeaderAuth), or anything else (repeatable)",
    )
    auth.add_argument(
        "--dialog360-secret", metavar="SECRET", help=f"sign each body as 360dialog does (or ${ENV_DIALOG360_SECRET})"
    )
    auth.add_argument(
        "--dialog360-header",
        default="x-360dialog-signature",
        metavar="NAME",
        help="the header of that signature (default: x-360dialog-signature)",
    )
    auth.add_argument(
        "--meta-app-secret",
        metavar="SECRET",
        help=f"sign each body as Meta does, X-Hub-Signature-256 (or ${ENV_META_APP_SECRET})",
    )
    auth.add_argument("--insecure", action="store_true", help="accept any TLS certificate (a self-signed one)")
    queue = parser.add_argument_group("callbacks (did the workers keep up?)")
    queue.add_argument("--broker-url", metavar="URL", help="the webhook's Redis: report the queue's depth and lag")
    queue.add_argument("--namespace", default="dramatiq", help="the Webhook's namespace (default: dramatiq)")
    queue.add_argument("--queue", default="wa_middleware", help="the Webhook's queue_name (default: wa_middleware)")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", metavar="DIR", help="where results.json and latency.png go (default: ./loadtest-<UTC time>)"
    )
    output.add_argument("--no-plot", action="store_true", help="do not draw latency.png")
    parser.set_defaults(func=run_command)


def _rate(args: argparse.Namespace) -> tuple[float, float]:
    """(deliveries per second, share of them that are statuses)."""
    mix_given = args.outgoing is not None or args.incoming is not None
    if args.rate is not None and mix_given:
        raise _Usage("give either --rate or --outgoing/--incoming, not both")
    if args.rate is not None:
        if not (args.rate > 0 and math.isfinite(args.rate)):
            raise _Usage("--rate must be a positive number")
        return args.rate, 0.75
    if not mix_given:
        raise _Usage("give the load: --rate R, or --outgoing N --incoming M (3N + M deliveries/s)")
    outgoing, incoming = args.outgoing or 0.0, args.incoming or 0.0
    try:
        rate = engine.sender_rate(outgoing, incoming)
    except ValueError as exc:
        raise _Usage(f"--outgoing/--incoming: {exc}") from None
    return rate, 3 * outgoing / rate


def _credentials(args: argparse.Namespace) -> engine.Credentials:
    basic = None
    value = args.basic_auth or os.environ.get(ENV_BASIC_AUTH)
    if value:
        user, sep, password = value.partition(":")
        if not sep:
            raise _Usage("--basic-auth is USER:PASS")
        basic = (user, password)
    headers = []
    for item in args.header:
        name, sep, header_value = item.partition(":")
        if not sep:
            raise _Usage(f"--header {item!r} is not NAME:VALUE")
        headers.append((name.strip(), header_value.strip()))
    dialog360 = args.dialog360_secret or os.environ.get(ENV_DIALOG360_SECRET)
    meta = args.meta_app_secret or os.environ.get(ENV_META_APP_SECRET)
    try:
        return engine.Credentials(
            basic=basic,
            headers=tuple(headers),
            dialog360_secret=dialog360.encode() if dialog360 else None,
            dialog360_header=args.dialog360_header,
            meta_app_secret=meta.encode() if meta else None,
        )
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _spec(args: argparse.Namespace) -> tuple[engine.LoadSpec, float]:
    rate, status_share = _rate(args)
    if args.processes < 1:
        raise _Usage("--processes must be at least 1")
    if args.connections < args.processes:
        raise _Usage("--connections must be at least --processes (each process has its own)")
    try:
        spec = engine.LoadSpec.for_url(
            args.url,
            rate=rate,
            duration=args.duration,
            bodies=sender_mix(status_share),
            warmup=args.warmup,
            connections=args.connections,
            timeout=args.timeout,
            drain_timeout=args.timeout,
            insecure=args.insecure,
            credentials=_credentials(args),
            connect_timeout=min(10.0, args.timeout),
        )
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    return spec, status_share


# -- printing ---------------------------------------------------------------------------------


def _err(message: str) -> None:
    print(f"wa-middleware: {message}", file=sys.stderr)


def _f(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


class _ProgressLine:
    """One line per interval; rewritten in place on a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.width = 0

    def __call__(self, row: engine.Progress) -> None:
        line = (
            f"{row.elapsed:6.1f} s {row.phase:<9} sent {row.sent:,}  answered {row.answered_per_s:,.0f}/s  "
            f"p50 {_f(row.p50_ms)} ms  p99 {_f(row.p99_ms)} ms  non-200 {row.non_200:,}  errors {row.errors:,}  "
            f"in flight {row.in_flight:,}"
        )
        if row.waiting:
            line += f"  waiting {row.waiting:,}"
        if row.behind:
            line += f"  (generator {row.lag_ms:,.0f} ms behind)"
        if self.tty:
            self.out.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def done(self) -> None:
        if self.tty and self.width:
            self.out.write("\n")
            self.out.flush()


def _print_verdict(spec: engine.LoadSpec, result: engine.LoadResult, verdict: engine.Verdict) -> None:
    word = "PASS" if verdict.passed else "FAIL"
    print(
        f"verdict: {word}  median {_f(verdict.median_ms)} ms (<= {engine.SLO_MEDIAN_MS:g})  "
        f"p99 {_f(verdict.p99_ms)} ms  over 1 s {verdict.over_1s_fraction:.2%}  "
        f"non-200 {verdict.non_200:,}  errors {verdict.errors:,}  "
        f"({verdict.measured:,} requests measured at {spec.rate:,.6g}/s)"
    )
    if not verdict.passed:
        if not verdict.measured:
            print("  nothing was measured")
        if verdict.median_ms > engine.SLO_MEDIAN_MS:
            print(f"  the median answer took over {engine.SLO_MEDIAN_MS:g} ms")
        if verdict.failed_fraction >= engine.SLO_SHARE:
            print(
                f"  {verdict.failed_fraction:.2%} were answered late (over {engine.SLOW_S:g} s), not with a 200, "
                f"or not at all (limit: under {engine.SLO_SHARE:.0%}); the sender delivers each of those again"
            )
    if result.non_200:
        print("  non-200: " + ", ".join(f"{status}: {n:,}" for status, n in sorted(result.non_200.items())))
    for kind, n in sorted(result.errors.items()):
        message = result.error_messages.get(kind)
        print(f"  errors: {kind}: {n:,}" + (f" ({message})" if message else ""))


def _print_queue(report: engine.QueueReport) -> None:
    kept_up = report.kept_up
    if kept_up is None:
        print(f"callbacks: could not read the queue {report.queue} ({report.last_error})")
        return
    print(
        f"callbacks: {'kept up' if kept_up else 'did NOT keep up'}  queue {report.queue}: depth "
        f"{report.depth_start:,} at the start, max {report.depth_max:,}, {report.depth_end:,} at the end; "
        f"oldest waiting {report.lag_end_s:.2f} s at the end (max {report.lag_max_s:.2f} s)"
    )
    if report.depth_max == 0:
        print("  the queue was empty at every sample: the workers kept up, or --namespace/--queue name another queue")
    if report.failures:
        print(f"  {report.failures} sample(s) failed: {report.last_error}")


# -- the command ------------------------------------------------------------------------------


def run_command(args: argparse.Namespace) -> int:
    """``wa-middleware loadtest URL ...``."""
    try:
        spec, status_share = _spec(args)
        out_dir = Path(args.out or f"loadtest-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _Usage(f"cannot create --out {out_dir}: {exc.strerror or exc}") from None
    except _Usage as exc:
        _err(str(exc))
        return EXIT_USAGE

    print(
        f"loadtest {spec.url}: {spec.rate:,.6g} deliveries/s for {spec.duration:g} s (+{spec.warmup:g} s warm-up), "
        f"{spec.connections} connections, {args.processes} process(es)"
    )
    print(
        f"  {status_share:.0%} status deliveries (1 in 20 batched), {1 - status_share:.0%} messages of 9 types; "
        f"unique ids; auth: {', '.join(spec.credentials.schemes()) or 'none'}"
    )

    watch = None
    if args.broker_url:
        from ..keys import KeyLayout

        try:
            watch = engine.QueueWatch(args.broker_url, KeyLayout(namespace=args.namespace, queue_name=args.queue))
            watch.sample()
        except Exception as exc:  # redis' errors, and a malformed URL (ValueError)
            _err(f"cannot read the queue at --broker-url: {exc}")
            return EXIT_CONNECTION

    first = engine.probe(spec, timeout=args.timeout)
    if first.status is None:
        _err(f"{spec.url}: {first.error}; nothing else was sent")
        return EXIT_CONNECTION
    if not first.ok:
        body = first.body[:200].decode("utf-8", errors="replace").strip()
        hint = " (check the auth options)" if first.status in (401, 403) else ""
        _err(f"{spec.url}: the first request was answered {first.status}{hint}: {body!r}; stopping")
        return EXIT_FAIL
    print(f"  probe: 200 in {first.latency_ms:.1f} ms")

    line = _ProgressLine(sys.stderr)
    try:
        with engine.LoadGenerator(args.processes) as generator:
            if watch is not None:
                watch.start(spec.rate)
            try:
                result = generator.run(spec, progress=line)
            finally:
                line.done()
                queue_report = watch.stop() if watch is not None else None
    except KeyboardInterrupt:
        _err("interrupted twice: no results")
        return EXIT_INTERRUPTED

    verdict = engine.judge(result)
    remarks = engine.notes(result)
    _print_verdict(spec, result, verdict)
    if queue_report is not None:
        _print_queue(queue_report)
    for remark in remarks:
        print(f"note: {remark}")
    report = engine.LoadReport(
        spec,
        result,
        verdict,
        remarks,
        queue_report,
        extra={"status_share": round(status_share, 4), "broker_queue": queue_report.queue if queue_report else None},
    )
    try:
        print(f"results: {engine.write_results(report, out_dir / 'results.json')}")
        plot = None if args.no_plot else engine.write_plot(report, out_dir / "latency.png")
        if plot is not None:
            print(f"plot: {plot}")
        elif not args.no_plot:
            print("plot: skipped, matplotlib is not installed (pip install matplotlib)")
    except OSError as exc:
        _err(f"cannot write the results: {exc.strerror or exc}")
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_PASS if verdict.passed else EXIT_FAIL
