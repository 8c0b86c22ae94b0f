"""Operator subcommands of ``wa-middleware``: 360dialog webhook configuration, ``send-test``, ``health``.

Exit codes: 0 success; 1 the remote side answered with an error (or ``send-test`` got no 200,
or ``health`` found the broker unreachable);
2 bad usage or a URL/header that fails the local checks (nothing was sent);
3 no answer at all (DNS, connection refused, TLS, timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from ..ops import urlcheck
from ..ops.dialog360 import DEFAULT_BASE_URL, ApiError, Client, ConnectionFailed, basic_auth_header, http_request

__all__ = ["EXIT_API", "EXIT_CONNECTION", "EXIT_OK", "EXIT_USAGE", "SAMPLE_DELIVERY", "register"]

EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3

#: 360dialog stops waiting for a 200 after this many seconds and redelivers later.
SENDER_TIMEOUT = 5.0

#: A Cloud API delivery with one text message, made-up identifiers, for ``send-test``.
SAMPLE_DELIVERY: dict[str, Any] = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "000000000000000",
            "changes": [
                {
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {"display_phone_number": "15550000000", "phone_number_id": "000000000000001"},
                        "contacts": [{"profile": {"name": "wa-middleware send-test"}, "wa_id": "15550000001"}],
                        "messages": [
                            {
                                "from": "15550000001",
                                "id": "wamid.wa-middleware-send-test",
                                "timestamp": "0",
                                "type": "text",
                                "text": {"body": "wa-middleware send-test"},
                            }
                        ],
                    },
                }
            ],
        }
    ],
}


def sample_delivery() -> tuple[bytes, str]:
    """`SAMPLE_DELIVERY` with a fresh message id and the current time: every smoke test is a new
    event (a fixed id would be skipped as a duplicate by every run after the first, for 7 days)."""
    import copy
    import uuid

    payload = copy.deepcopy(SAMPLE_DELIVERY)
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    message["id"] = f"wamid.send-test-{uuid.uuid4().hex}"
    message["timestamp"] = str(int(time.time()))
    return json.dumps(payload).encode(), str(message["id"])


class _UsageError(Exception):
    pass


def _err(message: str) -> None:
    print(f"wa-middleware: {message}", file=sys.stderr)


def _report(findings: list[urlcheck.Finding]) -> bool:
    """Print findings one per line; True when none is an error."""
    for finding in findings:
        print(str(finding), file=sys.stderr)
    return not urlcheck.errors(findings)


def _parse_headers(values: list[str], basic_auth: str | None) -> tuple[dict[str, str], list[urlcheck.Finding]]:
    headers: dict[str, str] = {}
    findings: list[urlcheck.Finding] = []
    for item in values:
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not sep:
            findings.append(urlcheck.Finding("error", f"--header {name!r} is not NAME:VALUE"))
            continue
        findings += urlcheck.check_header(name, value)
        headers[name] = value
    if basic_auth is not None:
        try:
            value = basic_auth_header(basic_auth)
        except ValueError as exc:
            findings.append(urlcheck.Finding("error", f"--basic-auth: {exc}"))
        else:
            if any(name.lower() == "authorization" for name in headers):
                findings.append(
                    urlcheck.Finding("error", "--basic-auth and --header Authorization:... exclude each other")
                )
            headers["Authorization"] = value
    return headers, findings


def _client(args: argparse.Namespace) -> Client:
    api_key = args.api_key or os.environ.get("D360_API_KEY", "")
    if not api_key:
        raise _UsageError("no API key: set D360_API_KEY (or pass --api-key)")
    if not api_key.isascii() or not api_key.isprintable() or any(c.isspace() for c in api_key):
        raise _UsageError("the API key contains spaces or characters an HTTP header cannot carry")
    base_url = args.base_url or os.environ.get("D360_BASE_URL") or DEFAULT_BASE_URL
    if not _report(urlcheck.check_api_base_url(base_url)):
        raise _UsageError(f"invalid base URL {base_url!r}")
    if args.timeout <= 0:
        raise _UsageError("--timeout must be positive")
    return Client(api_key, base_url=base_url, timeout=args.timeout)


def _mask(headers: Any, show: bool) -> Any:
    if not isinstance(headers, Mapping) or show:
        return headers
    return {name: f"<hidden, {len(str(value))} characters>" for name, value in headers.items()}


def _show(data: Any, args: argparse.Namespace, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if isinstance(data, dict):
        data = {**data, "headers": _mask(data["headers"], args.show_secrets)} if "headers" in data else data
    if args.json or not isinstance(data, dict):
        print(json.dumps(data, indent=2, sort_keys=True) if not isinstance(data, str) else data, file=out)
        return
    for key, value in data.items():
        if isinstance(value, Mapping):
            print(f"{key}:", file=out)
            for name, item in value.items():
                print(f"  {name}: {item}", file=out)
        elif isinstance(value, list):
            print(f"{key}: {', '.join(str(v) for v in value) or '(none)'}", file=out)
        else:
            print(f"{key}: {'(none)' if value is None else value}", file=out)


def _run_api(args: argparse.Namespace) -> int:
    try:
        if hasattr(args, "url"):
            # Validate everything locally first: nothing goes out if anything is wrong.
            findings = urlcheck.check_webhook_url(args.url)
            headers, header_findings = _parse_headers(args.header, args.basic_auth)
            if not _report(findings + header_findings):
                _err("nothing was sent")
                return EXIT_USAGE
            client = _client(args)
            if args.dry_run:
                payload: dict[str, Any] = {"url": args.url, "headers": headers}
                if args.command == "set-waba-webhook":
                    payload["override_all"] = args.override_all
                path = "/v1/configs/webhook" if args.command == "set-webhook" else "/waba_webhook"
                print(f"would POST {client.base_url}{path}")
                _show(payload, args)
                return EXIT_OK
            if args.command == "set-webhook":
                data = client.set_webhook(args.url, headers)
            else:
                data = client.set_waba_webhook(args.url, headers, override_all=args.override_all)
        else:
            client = _client(args)
            data = client.get_webhook() if args.command == "get-webhook" else client.get_waba_webhook()
    except _UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except ApiError as exc:
        _err(str(exc))
        return EXIT_API
    except ConnectionFailed as exc:
        _err(str(exc))
        return EXIT_CONNECTION
    _show(data, args)
    if args.command == "set-waba-webhook":
        print("note: 360dialog applies a WABA webhook asynchronously (15-20 s): confirm with get-waba-webhook")
    return EXIT_OK


def _send_test(args: argparse.Namespace) -> int:
    findings: list[urlcheck.Finding] = []
    parts = urlcheck.check_api_base_url(args.url)  # http allowed: the target may be a local deployment
    if urlcheck.errors(parts):
        findings += parts
    headers, header_findings = _parse_headers(args.header, args.basic_auth)
    findings += header_findings
    if not _report(findings):
        _err("nothing was sent")
        return EXIT_USAGE
    if args.payload is None:
        body, sample_id = sample_delivery()
        print(f"message id: {sample_id}")
    else:
        try:
            if args.payload == "-":
                body = sys.stdin.buffer.read()
            else:
                with open(args.payload, "rb") as handle:
                    body = handle.read()
        except OSError as exc:
            _err(f"cannot read --payload: {exc.strerror or exc}")
            return EXIT_USAGE
    headers.setdefault("Content-Type", "application/json")
    headers.setdefault("User-Agent", "wa-middleware send-test")
    started = time.perf_counter()
    try:
        answer = http_request("POST", args.url, headers=headers, body=body, timeout=args.timeout)
    except ConnectionFailed as exc:
        _err(f"{exc} after {(time.perf_counter() - started) * 1000:.1f} ms")
        return EXIT_CONNECTION
    elapsed = time.perf_counter() - started
    print(f"status: {answer.status}")
    print(f"latency: {elapsed * 1000:.1f} ms")
    if answer.body:
        print(f"body: {answer.body[:500].decode('utf-8', errors='replace')}")
    if elapsed > SENDER_TIMEOUT:
        _err(f"warning: slower than {SENDER_TIMEOUT:g} s: 360dialog would have given up and redelivered")
    if answer.status != 200:
        _err("warning: 360dialog counts only a 200 as delivered; anything else is redelivered")
        return EXIT_API
    return EXIT_OK


def _health(args: argparse.Namespace) -> int:
    from ..web.health import HealthCheck

    if args.timeout <= 0:
        _err("--timeout must be positive")
        return EXIT_USAGE
    if args.app:
        from ..errors import ConfigurationError
        from ._load import load_webhook

        try:
            check = HealthCheck(load_webhook(args.app), timeout=args.timeout)
        except (ConfigurationError, ImportError, AttributeError) as exc:
            _err(f"cannot load {args.app}: {exc}")
            return EXIT_USAGE
    else:
        url = args.broker_url or os.environ.get("WA_BROKER_URL")
        if not url:
            _err("give MODULE:ATTR, --broker-url or WA_BROKER_URL")
            return EXIT_USAGE
        check = HealthCheck(url, timeout=args.timeout)
    report = check.check()
    print(json.dumps(report.as_dict(), sort_keys=True))
    return EXIT_OK if report.ok else EXIT_API


def _add_webhook_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="the HTTPS URL deliveries go to (no '_' in the host, no port)")
    parser.add_argument("--basic-auth", metavar="USER:PASS", help="have 360dialog send 'Authorization: Basic ...'")
    parser.add_argument(
        "--header",
        "-H",
        metavar="NAME:VALUE",
        action="append",
        default=[],
        help="a header 360dialog sends with every delivery (repeatable; no '_' in names)",
    )
    parser.add_argument("--dry-run", action="store_true", help="check and print the request, send nothing")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator subcommands to the ``wa-middleware`` parser."""
    api = argparse.ArgumentParser(add_help=False)
    group = api.add_argument_group("360dialog API")
    group.add_argument("--api-key", help="the channel's API key (prefer the D360_API_KEY variable: argv is visible)")
    group.add_argument(
        "--base-url", help=f"API host (default: D360_BASE_URL, else {DEFAULT_BASE_URL}; the sandbox has its own)"
    )
    group.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the API (default: 15)")
    output = api.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    output.add_argument("--show-secrets", action="store_true", help="print header values (hidden by default)")

    set_hook = sub.add_parser(
        "set-webhook",
        parents=[api],
        help="set the phone number's webhook on 360dialog (recommended)",
        description="POST /v1/configs/webhook. Run it again after generating a new API key: that removes the webhook.",
    )
    _add_webhook_options(set_hook)
    set_hook.set_defaults(func=_run_api)

    get_hook = sub.add_parser(
        "get-webhook", parents=[api], help="show the phone number's webhook", description="GET /v1/configs/webhook."
    )
    get_hook.set_defaults(func=_run_api)

    set_waba = sub.add_parser(
        "set-waba-webhook",
        parents=[api],
        help="set the WABA-wide webhook (fallback for numbers without their own)",
        description="POST /waba_webhook. Applied asynchronously by 360dialog: confirm with get-waba-webhook.",
    )
    _add_webhook_options(set_waba)
    set_waba.add_argument(
        "--override-all", action="store_true", help="also replace the webhook of numbers that have their own"
    )
    set_waba.set_defaults(func=_run_api)

    get_waba = sub.add_parser(
        "get-waba-webhook", parents=[api], help="show the WABA-wide webhook", description="GET /waba_webhook."
    )
    get_waba.set_defaults(func=_run_api)

    send = sub.add_parser(
        "send-test",
        help="post a sample delivery to your endpoint; print its status and latency",
        description="A smoke test of a deployment: posts a sample Cloud API delivery (or --payload) to URL.",
    )
    send.add_argument("url", metavar="URL", help="your webhook endpoint, e.g. https://example.com/webhook")
    send.add_argument("--payload", metavar="FILE", help="send this file's bytes instead of the sample ('-': stdin)")
    send.add_argument("--basic-auth", metavar="USER:PASS", help="send 'Authorization: Basic ...'")
    send.add_argument("--header", "-H", metavar="NAME:VALUE", action="append", default=[], help="extra header")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default: 10)")
    send.set_defaults(func=_send_test)

    health = sub.add_parser(
        "health",
        help="check the broker once and print the report; exit 0 when reachable, 1 when not",
        description="For exec probes (worker pods have no HTTP server) and scripts.",
    )
    health.add_argument("app", nargs="?", metavar="MODULE:ATTR", help="the Webhook whose broker to check")
    health.add_argument("--broker-url", help="check this Redis URL instead (default: WA_BROKER_URL)")
    health.add_argument("--timeout", type=float, default=2.0, help="seconds the broker has to answer (default: 2)")
    health.set_defaults(func=_health)

    from .loadtest import add_parser as add_loadtest

    add_loadtest(sub)
