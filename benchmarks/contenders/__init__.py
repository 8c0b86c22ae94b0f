"""The contenders: one small module per app, and this table of how each one is served.

Each app module reads its settings from ``BENCH_*`` environment variables (the runner sets
them), so the very same module is what the server and the ``wa-middleware worker`` import.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

__all__ = ["CONTENDERS", "Contender", "by_name"]

#: Threads per gthread worker and processes for gunicorn's sync worker.
GTHREAD_THREADS = 8
SYNC_WORKERS = 4


@dataclass(frozen=True)
class Contender:
    """How to serve one contender.

    :param name: short id, used on the command line and in results.
    :param target: ``module:attr`` of the ASGI or WSGI app.
    :param server: ``uvicorn``, ``gunicorn-sync`` or ``gunicorn-gthread``.
    :param env: settings for the app module (``BENCH_*``).
    :param role: ``ceiling``, ``floor``, ``wa``, ``peer``: how the report groups it.
    :param worker: whether a ``wa-middleware worker`` runs beside it during the load.
    :param floor: the floor contender served the same way (same server, same settings), which the
        report sets this one against.
    :param ceiling: the ceiling contender served the same way.
    """

    name: str
    target: str
    server: str
    description: str
    role: str
    env: dict[str, str] = field(default_factory=dict)
    path: str = "/webhook"
    worker: bool = False
    floor: str | None = None
    ceiling: str | None = None

    def command(self, port: int) -> list[str]:
        """The exact server command line (it goes into results.json as the server flags)."""
        if self.server == "uvicorn":
            # One process, uvloop + httptools (the bench extra installs both), no access log.
            return [
                sys.executable, "-m", "uvicorn", self.target, "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                "--log-level", "warning", "--backlog", "2048",
            ]  # fmt: skip
        base = [
            sys.executable, "-m", "gunicorn", self.target, "--bind", f"127.0.0.1:{port}",
            "--log-level", "warning", "--backlog", "2048",
        ]  # fmt: skip
        if self.server == "gunicorn-sync":
            return [*base, "--worker-class", "sync", "--workers", str(SYNC_WORKERS)]
        if self.server == "gunicorn-gthread":
            return [*base, "--worker-class", "gthread", "--workers", "1", "--threads", str(GTHREAD_THREADS)]
        raise ValueError(f"unknown server {self.server!r}")


_WA = "benchmarks.contenders.wa_starlette"
_SLEEP = {"BENCH_SLEEP_MS": "100"}

CONTENDERS: tuple[Contender, ...] = (
    Contender("ceiling", "benchmarks.contenders.ceiling:app", "uvicorn",
              "bare ASGI app: read the body, answer 200", "ceiling"),
    Contender("floor", "benchmarks.contenders.floor:app", "uvicorn",
              "bare ASGI app + one redis.asyncio LPUSH of the body", "floor", ceiling="ceiling"),
    Contender("wa-starlette", f"{_WA}:app", "uvicorn", "wa-middleware in a Starlette app", "wa",
              floor="floor", ceiling="ceiling"),
    Contender("wa-fastapi", "benchmarks.contenders.wa_fastapi:app", "uvicorn",
              "wa-middleware in a FastAPI app", "wa", floor="floor", ceiling="ceiling"),
    Contender("ceiling-wsgi-sync", "benchmarks.contenders.ceiling_wsgi:app", "gunicorn-sync",
              f"bare WSGI app: read the body, answer 200, gunicorn sync x{SYNC_WORKERS}", "ceiling"),
    Contender("floor-wsgi-sync", "benchmarks.contenders.floor_wsgi:app", "gunicorn-sync",
              f"bare WSGI app + one redis-py LPUSH of the body, gunicorn sync x{SYNC_WORKERS}", "floor",
              ceiling="ceiling-wsgi-sync"),
    Contender("wa-flask-sync", "benchmarks.contenders.wa_flask:app", "gunicorn-sync",
              f"wa-middleware WSGI in Flask, gunicorn sync x{SYNC_WORKERS}", "wa",
              floor="floor-wsgi-sync", ceiling="ceiling-wsgi-sync"),
    Contender("ceiling-wsgi-gthread", "benchmarks.contenders.ceiling_wsgi:app", "gunicorn-gthread",
              f"bare WSGI app: read the body, answer 200, gunicorn gthread 1x{GTHREAD_THREADS}", "ceiling"),
    Contender("floor-wsgi-gthread", "benchmarks.contenders.floor_wsgi:app", "gunicorn-gthread",
              f"bare WSGI app + one redis-py LPUSH of the body, gunicorn gthread 1x{GTHREAD_THREADS}", "floor",
              ceiling="ceiling-wsgi-gthread"),
    Contender("wa-flask-gthread", "benchmarks.contenders.wa_flask:app", "gunicorn-gthread",
              f"wa-middleware WSGI in Flask, gunicorn gthread 1x{GTHREAD_THREADS}", "wa",
              floor="floor-wsgi-gthread", ceiling="ceiling-wsgi-gthread"),
    Contender("wa-starlette-100ms", f"{_WA}:app", "uvicorn",
              "wa-middleware (Starlette), 100 ms callback run by a worker alongside", "wa",
              env={**_SLEEP, "BENCH_QUEUE": "bench_cb"}, worker=True),
    Contender("pywa-async", "benchmarks.contenders.pywa_app:app", "uvicorn",
              "pywa_async FastAPI integration, no-op handlers", "peer", env={"BENCH_PYWA": "async"}),
    Contender("pywa-sync", "benchmarks.contenders.pywa_app:app", "uvicorn",
              "pywa (sync) FastAPI integration, no-op handlers", "peer", env={"BENCH_PYWA": "sync"}),
    Contender("pywa-async-100ms", "benchmarks.contenders.pywa_app:app", "uvicorn",
              "pywa_async FastAPI integration, handlers sleep 100 ms", "peer",
              env={"BENCH_PYWA": "async", **_SLEEP}),
    Contender("pywa-sync-100ms", "benchmarks.contenders.pywa_app:app", "uvicorn",
              "pywa (sync) FastAPI integration, handlers sleep 100 ms", "peer",
              env={"BENCH_PYWA": "sync", **_SLEEP}),
)  # fmt: skip


def by_name(name: str) -> Contender:
    for contender in CONTENDERS:
        if contender.name == name:
            return contender
    raise KeyError(f"no contender {name!r}; known: {', '.join(c.name for c in CONTENDERS)}")
