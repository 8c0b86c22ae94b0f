"""The ``wa-middleware`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _worker(args: argparse.Namespace) -> int:
    if args.metrics_port is not None:
        # Before anything imports prometheus_client: its multiprocess mode is chosen at import
        # time, and every worker process must write its samples where this one reads them.
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            import tempfile

            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wa-middleware-metrics-")
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from ..worker import ENV_APP, ENV_PATH
    from ._load import load_webhook

    paths = args.path or ["."]
    webhook = load_webhook(args.app, paths)  # fail here, with a clear message, rather than in every child
    import redis

    from ..redis_url import permanent_error, redact

    try:
        webhook.runtime.dispatcher.lease.preflight()  # an evicting memory policy: one line, exit 2
    except redis.RedisError as exc:
        reason = permanent_error(exc)
        if reason is not None:  # refused credentials, a certificate: waiting would not help
            print(f"wa-middleware: error: {redact(webhook.broker_url)}: {reason}", file=sys.stderr)
            return 2
        # Not reachable yet: the workers wait for it.
        print(f"wa-middleware: warning: cannot check Redis yet ({exc})", file=sys.stderr)
    os.environ[ENV_APP] = args.app
    os.environ[ENV_PATH] = os.pathsep.join(os.path.abspath(p) for p in paths)
    if args.metrics_port is not None:
        from ..errors import ConfigurationError
        from ..metrics import serve_worker_metrics

        try:
            serve_worker_metrics(args.metrics_port, webhook, addr=args.metrics_addr)
        except (ConfigurationError, OSError) as exc:
            print(f"wa-middleware: cannot serve metrics: {exc}", file=sys.stderr)
            return 2
    argv = [
        "wa_middleware.worker:setup",
        "--processes",
        str(args.processes),
        "--threads",
        str(args.threads),
        "--queues",
        webhook.queue_name,
        "--path",
        *paths,
    ]
    if args.verbose:
        argv.append("-" + "v" * args.verbose)
    if args.pid_file:
        argv += ["--pid-file", args.pid_file]
    result = dramatiq_main(make_argument_parser().parse_args(argv))  # type: ignore[no-untyped-call]
    return int(result or 0)


def _embedded(args: argparse.Namespace) -> int:
    from ..web.embedded import ensure_server, server_url, stop_server

    if args.action == "start":
        print(ensure_server(args.data_dir))
    elif args.action == "stop":
        print("stopped" if stop_server(args.data_dir) else "not running")
    else:
        url = server_url(args.data_dir)
        print(url or "not running")
        return 0 if url else 1
    return 0


def _replay(args: argparse.Namespace) -> int:
    from ..ops.replay import KINDS, parse_since, replay
    from ._load import load_webhook

    webhook = load_webhook(args.app, args.path or ())
    if not webhook.record:
        print("note: this Webhook has record=False; only deliveries recorded while it was on can be replayed")
    kinds = {KINDS[k] for k in args.kind} if args.kind else None
    report = replay(
        webhook, since_seconds=parse_since(args.since), kinds=kinds, callback=args.callback, dry_run=args.dry_run
    )
    for name, kind, ident in report.planned:
        print(f"would run {name} on {kind} {ident}")
    verb = "would re-run" if args.dry_run else "re-ran"
    print(
        f"{verb} {report.runs} callback run(s) on {report.events} event(s) "
        f"from {report.deliveries} recorded delivery(ies); deduplication bypassed"
    )
    for name, error in report.failures:
        print(f"failed: {name}: {error}")
    return 1 if report.failures else 0


def _path_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--path",
        "-P",
        action="append",
        metavar="DIR",
        help="put DIR first on the import path for MODULE (repeatable; the current directory is always on it)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wa-middleware", description="WhatsApp webhooks, answered fast.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser(
        "worker",
        help="run dramatiq worker processes that execute the callbacks",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    worker.add_argument("app", metavar="MODULE:ATTR", help="where the Webhook is, e.g. myapp.hooks:wa")
    worker.add_argument("--processes", "-p", type=int, default=os.cpu_count() or 1, help="worker processes")
    worker.add_argument("--threads", "-t", type=int, default=8, help="threads per worker process")
    _path_option(worker)
    worker.add_argument("--pid-file", help="write the master process id here")
    worker.add_argument("--verbose", "-v", action="count", default=0)
    worker.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the Prometheus metrics of all worker processes on this port (needs the metrics extra)",
    )
    worker.add_argument("--metrics-addr", default="0.0.0.0", help="address of the metrics server (default: 0.0.0.0)")
    worker.set_defaults(func=_worker)

    embedded = sub.add_parser("embedded", help="the embedded Valkey server used when no broker is configured")
    embedded.add_argument("action", choices=["start", "stop", "status"])
    embedded.add_argument("--data-dir", default=".wa_middleware")
    embedded.set_defaults(func=_embedded)
    # -- dead letters (wa_middleware/deadletters.py) --
    dead = sub.add_parser("dead-letters", help="list, show, replay or purge callbacks that failed their last try")
    dead.add_argument("app", metavar="MODULE:ATTR", help="where the Webhook is, e.g. myapp.hooks:wa")
    dead.add_argument("action", choices=["list", "show", "replay", "purge"])
    dead.add_argument("ids", nargs="*", help="dead-letter ids (from list)")
    dead.add_argument("--all", action="store_true", help="replay or purge every dead letter")
    dead.add_argument("--limit", type=int, default=None, help="list at most this many")
    _path_option(dead)
    dead.set_defaults(func=_dead_letters)

    again = sub.add_parser(
        "replay",
        help="run callbacks again over recorded deliveries (Webhook(record=True)), e.g. after a bug fix",
        description="Runs in this process, through the same decode and filters as the workers. "
        "Deduplication is bypassed for this replay only: every matching callback runs again.",
    )
    again.add_argument("app", metavar="MODULE:ATTR", help="where the Webhook is, e.g. myapp.hooks:wa")
    again.add_argument("--since", required=True, help="how far back: 30m, 2h, 7d")
    again.add_argument("--kind", action="append", choices=["messages", "statuses", "errors", "changes"])
    again.add_argument("--callback", help="only this callback (its name: module.function, or name=...)")
    again.add_argument("--dry-run", action="store_true", help="count what would run, run nothing")
    _path_option(again)
    again.set_defaults(func=_replay)

    from .commands import register

    register(sub)
    return parser


def _dead_letters(args: argparse.Namespace) -> int:
    from .deadletters import run_command

    return run_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    from ..errors import ConfigurationError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        # A mistake in what was asked (a spec, an option): one line, the fix in it, no traceback.
        if args.debug:
            raise
        print(f"wa-middleware: error: {exc}", file=sys.stderr)
        return 2
