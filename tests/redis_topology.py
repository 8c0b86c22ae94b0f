"""Redis deployments beyond one plain server, as real processes: TLS with ACL users, and a primary with
a replica behind Sentinel, for the tests of `wa_middleware.redis_url` and of failovers.

* `certificates`: a throwaway CA, a server certificate for 127.0.0.1 and a client certificate,
  made with the ``openssl`` command (the test skips without it).
* `TLSRedis`: a redis-server that listens only on a TLS port, with ACL users and ``default`` off.
* `Relay`: a plain TCP forwarder that can hold everything it would forward (``freeze``): put
  between a primary and its replica, it makes the replica lag behind by as much as the test wants.
* `Sentinels`: a primary, a replica (through a `Relay`), optionally a second one, and three
  ``redis-sentinel`` processes.
"""

from __future__ import annotations

import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from tests.conftest import RedisServer, free_port, wait_for_port

SERVICE = "wa-primary"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def certificates(directory: Path) -> Certificates:
    """A CA and two certificates it signed: the server's (for 127.0.0.1 and localhost) and a client's."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test certificate with")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=wa-middleware test CA")  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=wa-middleware test {name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip
    return Certificates(
        directory / "ca.pem", directory / "server.pem", directory / "server.key",
        directory / "client.pem", directory / "client.key",
    )  # fmt: skip


class TLSRedis(RedisServer):
    """A redis-server on a TLS port only (no plain port), ``default`` off, one ACL user per ``users`` entry.

    :param users: user name -> ``(password, ACL rules)``, e.g. ``{"app": ("pw", "~* +@all")}``.
    :param client_certs: require a client certificate signed by the test CA (``tls-auth-clients yes``).
    """

    def __init__(
        self, directory: Path, certs: Certificates, users: dict[str, tuple[str, str]], *, client_certs: bool = False
    ) -> None:
        super().__init__(directory)
        self.certs = certs
        self.users = users
        self.extra = (
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
            "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes" if client_certs else "no",
            "--user", "default", "off",
        )  # fmt: skip
        for name, (password, rules) in users.items():
            self.extra += ("--user", name, "on", f">{password}", *rules.split())

    def url_for(self, user: str, password: str | None = None, **options: str) -> str:
        """A ``rediss://`` URL as that user (its own password unless one is given), with the CA option."""
        secret = self.users[user][0] if password is None else password
        query = "&".join(
            f"{k}={quote(v, safe='/')}" for k, v in {"ssl_ca_certs": str(self.certs.ca), **options}.items()
        )
        return f"rediss://{quote(user)}:{quote(secret, safe='')}@127.0.0.1:{self.port}/0?{query}"

    @property
    def url(self) -> str:
        return self.url_for(next(iter(self.users)))

    def client(self) -> redis.Redis:
        user, (password, _) = next(iter(self.users.items()))
        return redis.Redis(port=self.port, username=user, password=password, ssl=True, ssl_ca_certs=str(self.certs.ca))


class Relay:
    """A TCP forwarder from a free port to ``upstream_port``; ``freeze()`` stops it forwarding anything
    (connections stay open, bytes wait), ``close()`` drops every connection and stops listening."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._frozen = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="relay", daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while not self._stop.is_set():
                if self._frozen.is_set():
                    time.sleep(0.02)  # nothing is read, so nothing moves: the bytes wait in the kernel's buffers
                    continue
                for key, _ in self._selector.select(0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept(peers)
                    elif sock in peers:
                        self._forward(sock, peers)
        finally:
            for sock in [*peers, self._listener]:
                sock.close()
            self._selector.close()

    def _accept(self, peers: dict[socket.socket, socket.socket]) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=1)
        except OSError:
            client.close()
            return
        for a, b in ((client, upstream), (upstream, client)):
            a.setblocking(True)
            peers[a] = b
            self._selector.register(a, selectors.EVENT_READ, None)

    def _forward(self, sock: socket.socket, peers: dict[socket.socket, socket.socket]) -> None:
        other = peers[sock]
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        for s in (sock, other):
            peers.pop(s, None)
            self._selector.unregister(s)
            s.close()


def _sentinel_command(conf: Path) -> list[str]:
    found = shutil.which("redis-sentinel")
    if found:
        return [found, str(conf)]
    server = shutil.which("redis-server")
    if server:
        # What redis-sentinel is: the same program in sentinel mode. The configuration file must come
        # first (``redis-server --sentinel FILE`` reads FILE as a sentinel statement, and exits 1).
        return [server, str(conf), "--sentinel"]
    pytest.skip("no redis-sentinel (apt-get install redis-sentinel) nor redis-server to run in sentinel mode")


class Sentinels:
    """A primary, one replica replicating through a `Relay` (so it can be made to lag), ``more`` replicas
    replicating directly, and ``count`` sentinels watching them with ``quorum``; ``down_after_ms``
    until a primary is deemed down."""

    def __init__(
        self, directory: Path, *, count: int = 3, quorum: int = 2, down_after_ms: int = 1000, more: int = 0
    ) -> None:
        self.dir = directory
        self.count = count
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        (directory / "primary").mkdir(parents=True)
        self.more = more
        self.primary = RedisServer(directory / "primary")
        self.relay: Relay | None = None
        self.replica: RedisServer | None = None
        self.others: list[RedisServer] = []
        self.ports = [free_port() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> Sentinels:
        _sentinel_command(self.dir)  # skips at once when there is no sentinel to run
        self.primary.start()
        self.relay = Relay(self.primary.port)
        for n in range(1 + self.more):
            (self.dir / f"replica-{n}").mkdir()
            upstream = self.relay.port if n == 0 else self.primary.port
            server = RedisServer(self.dir / f"replica-{n}", extra=("--replicaof", "127.0.0.1", str(upstream)))
            server.start()
            if n == 0:
                self.replica = server
            else:
                self.others.append(server)
        for n, port in enumerate(self.ports):
            conf = self.dir / f"sentinel-{n}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            with open(self.dir / f"sentinel-{n}.log", "ab") as log:
                self.procs.append(subprocess.Popen(_sentinel_command(conf), stdout=log, stderr=subprocess.STDOUT))
            wait_for_port(port, proc=self.procs[-1])
        self.wait_ready()
        return self

    def sentinel(self, n: int = 0) -> redis.Redis:
        return redis.Redis(port=self.ports[n], socket_timeout=2, decode_responses=True)

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the replicas are in sync and every sentinel knows them and the other sentinels."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                assert self.replica is not None
                links = [r.client().info("replication").get("master_link_status") for r in self.replicas]
                ready = links == ["up"] * len(links)
                for n in range(self.count):
                    with self.sentinel(n) as s:
                        ready = ready and len(s.sentinel_slaves(SERVICE)) == len(self.replicas)
                        ready = ready and len(s.sentinel_sentinels(SERVICE)) == self.count - 1
            except (redis.RedisError, AssertionError):
                ready = False
            if ready:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the sentinels did not see the replicas and each other within {timeout}s")

    @property
    def replicas(self) -> list[RedisServer]:
        return ([self.replica] if self.replica is not None else []) + self.others

    def master_port(self) -> int:
        """The primary's port as the first sentinel sees it (it can lag the others by a hello period)."""
        with self.sentinel() as s:
            return int(s.sentinel_get_master_addr_by_name(SERVICE)[1])

    def agreed_master_port(self, *, other_than: int | None = None, timeout: float = 60) -> int:
        """Wait until every sentinel names the same primary (and not ``other_than``), and return its port.

        A sentinel that did not lead a failover learns of it from the others' hello messages, every 2 s:
        asking one sentinel right after a failover can still give the old primary."""
        deadline = time.monotonic() + timeout
        seen: list[int | None] = []
        while time.monotonic() < deadline:
            seen = []
            for n in range(self.count):
                try:
                    with self.sentinel(n) as s:
                        seen.append(int(s.sentinel_get_master_addr_by_name(SERVICE)[1]))
                except (redis.RedisError, TypeError):
                    seen.append(None)
            if len(set(seen)) == 1 and seen[0] is not None and seen[0] != other_than:
                return seen[0]
            time.sleep(0.2)
        raise TimeoutError(f"the sentinels did not agree on a new primary within {timeout}s: {seen}")

    def kill_primary(self) -> float:
        """SIGKILL the primary; its replica's link drops as a real crash would drop it (the relay closes).
        Returns the monotonic time by which it was dead."""
        self.primary.stop(signal.SIGKILL)
        dead = time.monotonic()
        if self.relay is not None:
            self.relay.close()
        return dead

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if self.relay is not None:
            self.relay.close()
        for server in [self.primary, *self.replicas]:
            server.stop(signal.SIGKILL)
