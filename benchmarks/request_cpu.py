"""``python -m benchmarks.request_cpu``: CPU time per request of the ASGI request path, in process.

The HTTP benchmark's latencies are at the mercy of everything else on the machine; CPU time
per request is not, so this is the tool to compare two versions of the request path (run it
on each checkout). It calls the middleware directly (no HTTP server, no sockets to the client)
with the real `AsyncEnqueuer` against a private Redis (``appendfsync no``: the disk is not what
is measured), ``N`` requests at a time, and reports the best of three rounds, next to the
same loop doing the floor's single ``LPUSH``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import MutableMapping
from typing import Any

__all__ = ["main"]


async def _measure(url: str, concurrencies: list[int], requests: int) -> dict[str, dict[int, float]]:
    import redis.asyncio as aredis
    from starlette.applications import Starlette
    from wa_middleware.adapters.asgi import WebhookMiddleware

    from wa_middleware import BasicAuth, Webhook

    from .payloads import AUTH_PASSWORD, AUTH_USER, auth_header, make_deliveries

    wa = Webhook(auth=BasicAuth(AUTH_USER, AUTH_PASSWORD), broker_url=url, namespace="wabench", queue_name="cpu")
    app = Starlette()
    app.add_middleware(WebhookMiddleware, webhook=wa)
    bodies = [d.body for d in make_deliveries(400)]
    auth = auth_header().encode()
    floor_client = aredis.Redis.from_url(url)

    async def wa_request(body: bytes) -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/webhook",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"authorization", auth),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        status: list[int] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"the middleware answered {status}")

    async def floor_request(body: bytes) -> None:
        await floor_client.lpush("wabench:cpu-floor", body)

    out: dict[str, dict[int, float]] = {"wa-middleware": {}, "floor (LPUSH)": {}}
    for name, fn in (("wa-middleware", wa_request), ("floor (LPUSH)", floor_request)):
        for concurrency in concurrencies:
            best = float("inf")
            for _ in range(3):
                started = time.process_time()
                for i in range(0, requests, concurrency):
                    await asyncio.gather(*(fn(bodies[(i + j) % len(bodies)]) for j in range(concurrency)))
                best = min(best, (time.process_time() - started) / requests * 1e6)
            out[name][concurrency] = round(best, 1)
    await floor_client.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    from .servers import RedisServer, free_port

    parser = argparse.ArgumentParser(prog="python -m benchmarks.request_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,8,32", help="requests in flight at once (comma-separated)")
    parser.add_argument("--requests", type=int, default=4000, help="requests per round")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    server = RedisServer(free_port(7100, 7199), appendfsync="no")
    try:
        try:
            import uvloop

            figures = uvloop.run(_measure(server.url, concurrencies, args.requests))
        except ImportError:  # pragma: no cover
            figures = asyncio.run(_measure(server.url, concurrencies, args.requests))
    finally:
        server.stop()
    print("CPU time per request, microseconds (best of 3):")
    print(f"{'':16}" + "".join(f"{f'x{c}':>10}" for c in concurrencies))
    for name, row in figures.items():
        print(f"{name:16}" + "".join(f"{row[c]:>10.1f}" for c in concurrencies))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
