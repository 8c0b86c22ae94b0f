"""The ``wa-middleware`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _worker(args: argparse.Namespace) -> int:
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from .worker import ENV_APP, load_webhook

    webhook = load_webhook(args.app)  # fail here, with a clear message, rather than in every child
    os.environ[ENV_APP] = args.app
    argv = [
        "wa_middleware.worker:setup",
        "--processes",
        str(args.processes),
        "--threads",
        str(args.threads),
        "--queues",
        webhook.queue_name,
        "--path",
        *args.path,
    ]
    if args.verbose:
        argv.append("-" + "v" * args.verbose)
    if args.pid_file:
        argv += ["--pid-file", args.pid_file]
    result = dramatiq_main(make_argument_parser().parse_args(argv))
    return int(result or 0)


def _embedded(args: argparse.Namespace) -> int:
    from .embedded import ensure_server, server_url, stop_server

    if args.action == "start":
        print(ensure_server(args.data_dir))
    elif args.action == "stop":
        print("stopped" if stop_server(args.data_dir) else "not running")
    else:
        url = server_url(args.data_dir)
        print(url or "not running")
        return 0 if url else 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wa-middleware", description="WhatsApp webhooks, answered fast.")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run dramatiq worker processes that execute the callbacks")
    worker.add_argument("app", metavar="MODULE:ATTR", help="where the Webhook is, e.g. myapp.hooks:wa")
    worker.add_argument("--processes", "-p", type=int, default=os.cpu_count() or 1, help="worker processes")
    worker.add_argument("--threads", "-t", type=int, default=8, help="threads per worker process")
    worker.add_argument("--path", "-P", nargs="*", default=["."], help="import path for MODULE (default: .)")
    worker.add_argument("--pid-file", help="write the master process id here")
    worker.add_argument("--verbose", "-v", action="count", default=0)
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
    dead.set_defaults(func=_dead_letters)
    return parser


def _dead_letters(args: argparse.Namespace) -> int:
    from .deadletters import run_command

    return run_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
