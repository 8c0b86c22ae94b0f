"""``python -m benchmarks.request_cpu``: CPU time per request of the request path, in process.

The HTTP benchmark's latencies are at the mercy of everything else on the machine; CPU time
per request much less so, so this is the tool to compare two versions of the request path (run
it on each checkout), and the runner reports its figures beside the HTTP ones. It calls the
middleware directly, no HTTP server and no client sockets, with the real enqueuers against a
private Redis (``appendfsync no``: the disk is not what is measured), and puts each next to the
floor, the HTTP benchmark's floor contender called exactly the same way (a bare app that reads the
body, does one ``LPUSH`` from the same client library and answers 200), and to that ``LPUSH`` alone:

- ASGI: `WebhookMiddleware` in a Starlette app, ``N`` requests in flight at once on uvloop, each
  with a scope, ``receive`` and ``send`` as a server gives them, against the bare ASGI app and one
  ``redis.asyncio`` ``LPUSH``;
- WSGI: `wa_middleware.adapters.wsgi.WebhookMiddleware` called with an environ as gunicorn
  builds it, from ``N`` threads, against the bare WSGI app and one ``redis-py`` ``LPUSH``.

``x1`` is the one-at-a-time path (each request alone, nothing to share a write with). Each
figure is the best of ``rounds`` rounds, the rounds of the contenders interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

__all__ = ["main", "measure"]

#: What the report calls the rows: each middleware, the floor app (the HTTP benchmark's floor, a bare
#: app plus one ``LPUSH``, called exactly as the middleware is) and the ``LPUSH`` alone.
ASGI, ASGI_FLOOR, WSGI, WSGI_FLOOR = "asgi", "asgi-floor", "wsgi", "wsgi-floor"
ASGI_LPUSH, WSGI_LPUSH = "asgi-lpush", "wsgi-lpush"


def _webhook(url: str, queue: str) -> Any:
    from wa_middleware import BasicAuth, Webhook

    from .payloads import AUTH_PASSWORD, AUTH_USER

    return Webhook(auth=BasicAuth(AUTH_USER, AUTH_PASSWORD), broker_url=url, namespace="wabench", queue_name=queue)


async def _asgi(url: str, concurrencies: list[int], requests: int, rounds: int) -> dict[str, dict[int, float]]:
    import redis.asyncio as aredis
    from starlette.applications import Starlette
    from wa_middleware.adapters.asgi import WebhookMiddleware

    from .contenders.ceiling import answer, read_body
    from .payloads import auth_header, make_deliveries

    wa = _webhook(url, "cpu")
    app = Starlette()
    app.add_middleware(WebhookMiddleware, webhook=wa)
    bodies = [d.body for d in make_deliveries(400)]
    auth = auth_header().encode()
    floor_client = aredis.Redis.from_url(url)

    async def call(asgi_app: Any, body: bytes) -> None:
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

        await asgi_app(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"{asgi_app!r} answered {status}")

    async def floor_app(scope: Any, receive: Any, send: Any) -> None:
        # The HTTP benchmark's floor contender (`contenders.floor`), on this run's client.
        body = await read_body(receive)
        await floor_client.lpush("wabench:cpu-floor", body)
        await answer(send)

    async def wa_request(body: bytes) -> None:
        await call(app, body)

    async def floor_request(body: bytes) -> None:
        await call(floor_app, body)

    async def lpush_request(body: bytes) -> None:
        await floor_client.lpush("wabench:cpu-floor", body)

    async def one_round(fn: Callable[[bytes], Any], concurrency: int) -> float:
        started = time.process_time()
        # Each request in a task of its own, as a server runs it (x1: one task at a time).
        for i in range(0, requests, concurrency):
            await asyncio.gather(*(fn(bodies[(i + j) % len(bodies)]) for j in range(concurrency)))
        return (time.process_time() - started) / requests * 1e6

    contenders = ((ASGI, wa_request), (ASGI_FLOOR, floor_request), (ASGI_LPUSH, lpush_request))
    out: dict[str, dict[int, float]] = {name: {} for name, _ in contenders}
    for concurrency in concurrencies:
        best = {name: float("inf") for name, _ in contenders}
        await one_round(wa_request, concurrency)  # warm: first connections, the policy check
        for _ in range(rounds):
            for name, fn in contenders:
                best[name] = min(best[name], await one_round(fn, concurrency))
        for name, value in best.items():
            out[name][concurrency] = round(value, 1)
    await floor_client.aclose()
    await wa.aclose()
    return out


def _environ(body: bytes, auth: str) -> dict[str, Any]:
    """What gunicorn puts in an environ for one delivery (its keys, in its order)."""
    return {
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": None,
        "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": "gunicorn",
        "wsgi.input": io.BytesIO(body),
        "gunicorn.socket": None,
        "REQUEST_METHOD": "POST",
        "QUERY_STRING": "",
        "RAW_URI": "/webhook",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": auth,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "PATH_INFO": "/webhook",
        "SCRIPT_NAME": "",
    }


def _wsgi(url: str, concurrencies: list[int], requests: int, rounds: int) -> dict[str, dict[int, float]]:
    import redis
    from wa_middleware.adapters.wsgi import WebhookMiddleware

    from .contenders.ceiling_wsgi import BODY, HEADERS, read_body
    from .payloads import auth_header, make_deliveries

    wa = _webhook(url, "cpu-wsgi")

    def not_found(environ: Any, start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [])
        return [b""]

    middleware = WebhookMiddleware(not_found, webhook=wa)
    bodies = [d.body for d in make_deliveries(400)]
    auth = auth_header()
    floor_client = redis.Redis.from_url(url)

    def wa_request(body: bytes) -> None:
        statuses: list[str] = []
        for _ in middleware(_environ(body, auth), lambda status, headers, exc_info=None: statuses.append(status)):  # type: ignore[arg-type,func-returns-value]
            pass
        if statuses[0] != "200 OK":
            raise RuntimeError(f"the middleware answered {statuses}")

    def floor_app(environ: Any, start_response: Any) -> list[bytes]:
        # The HTTP benchmark's WSGI floor contender (`contenders.floor_wsgi`), on this run's client.
        floor_client.lpush("wabench:cpu-floor", read_body(environ))
        start_response("200 OK", HEADERS)
        return [BODY]

    def floor_request(body: bytes) -> None:
        statuses: list[str] = []
        for _ in floor_app(_environ(body, auth), lambda status, headers, exc_info=None: statuses.append(status)):
            pass
        if statuses[0] != "200 OK":
            raise RuntimeError(f"the floor answered {statuses}")

    def lpush_request(body: bytes) -> None:
        environ = _environ(body, auth)
        floor_client.lpush("wabench:cpu-floor", environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))

    def one_round(fn: Callable[[bytes], None], concurrency: int) -> float:
        def run(offset: int) -> None:
            for i in range(offset, requests, concurrency):
                fn(bodies[i % len(bodies)])

        started = time.process_time()  # every thread of the process
        if concurrency == 1:
            run(0)
        else:
            threads = [threading.Thread(target=run, args=(j,)) for j in range(concurrency)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return (time.process_time() - started) / requests * 1e6

    contenders = ((WSGI, wa_request), (WSGI_FLOOR, floor_request), (WSGI_LPUSH, lpush_request))
    out: dict[str, dict[int, float]] = {name: {} for name, _ in contenders}
    for concurrency in concurrencies:
        best = {name: float("inf") for name, _ in contenders}
        one_round(wa_request, concurrency)
        for _ in range(rounds):
            for name, fn in contenders:
                best[name] = min(best[name], one_round(fn, concurrency))
        for name, value in best.items():
            out[name][concurrency] = round(value, 1)
    floor_client.close()
    wa.close()
    return out


def measure(
    concurrencies: list[int] | None = None,
    requests: int = 4000,
    rounds: int = 3,
    port_range: tuple[int, int] = (7100, 7199),
) -> dict[str, Any]:
    """CPU microseconds per request: ``{"asgi": {1: us, 8: us, ...}, "asgi-floor": ..., "wsgi": ...,
    "wsgi-floor": ...}``, against a private Redis started (and stopped) here."""
    from .servers import RedisServer, free_port

    levels = concurrencies or [1, 8, 32]
    server = RedisServer(free_port(*port_range), appendfsync="no")
    try:
        try:
            import uvloop

            figures = uvloop.run(_asgi(server.url, levels, requests, rounds))
        except ImportError:  # pragma: no cover
            figures = asyncio.run(_asgi(server.url, levels, requests, rounds))
        figures.update(_wsgi(server.url, [c for c in levels if c <= 8], requests, rounds))
    finally:
        server.stop()
    return {
        "unit": "CPU microseconds per request, best of the rounds",
        "requests": requests,
        "rounds": rounds,
        "figures": {name: {str(level): value for level, value in row.items()} for name, row in figures.items()},
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a markdown table, with each one's ratio to its floor."""
    figures = result["figures"]
    levels = sorted({int(level) for row in figures.values() for level in row})
    lines = [
        "| request path | " + " | ".join(f"x{level}" for level in levels) + " |",
        "|---|" + "---:|" * len(levels),
    ]
    labels = {
        ASGI: "ASGI middleware (in Starlette)",
        ASGI_FLOOR: "floor: bare ASGI app + one redis.asyncio LPUSH",
        ASGI_LPUSH: "one redis.asyncio LPUSH alone",
        WSGI: "WSGI middleware",
        WSGI_FLOOR: "floor: bare WSGI app + one redis-py LPUSH",
        WSGI_LPUSH: "one redis-py LPUSH alone",
    }
    for name in (ASGI, ASGI_FLOOR, ASGI_LPUSH, WSGI, WSGI_FLOOR, WSGI_LPUSH):
        row = figures.get(name)
        if not row:
            continue
        floor = figures.get(f"{name}-floor") if name in (ASGI, WSGI) else None
        cells = []
        for level in levels:
            value = row.get(str(level))
            if value is None:
                cells.append("-")
            elif floor and floor.get(str(level)):
                cells.append(f"{value:,.1f} ({value / floor[str(level)]:.2f}x)")
            else:
                cells.append(f"{value:,.1f}")
        lines.append(f"| {labels[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.request_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,8,32", help="requests in flight at once (comma-separated)")
    parser.add_argument("--requests", type=int, default=4000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per contender (the best counts)")
    args = parser.parse_args(argv)
    result = measure([int(c) for c in args.concurrency.split(",")], args.requests, args.rounds)
    print(f"CPU time per request, microseconds (best of {args.rounds}; in brackets: / its floor):")
    print(table(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
