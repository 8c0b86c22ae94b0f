"""`wa_middleware.redis_url`: the URL forms, their mistakes, redaction, and clients against real servers
(a TLS server with ACL users, a unix socket, a primary demoted to a replica)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.sentinel

from tests.conftest import RedisServer
from tests.redis_topology import Certificates, Sentinels, TLSRedis, certificates
from wa_middleware import ConfigurationError, Webhook
from wa_middleware.redis_url import (
    DEMOTED,
    SENTINEL_TIMEOUT,
    async_client,
    parse,
    permanent_error,
    redact,
    sync_client,
)
from wa_middleware.web.health import HealthCheck
from wa_middleware.worker.lease import TRANSIENT

SECRET = "s3cret/@pw"


@pytest.mark.parametrize(
    ("url", "connection", "sentinels", "service", "sentinel"),
    [
        pytest.param("redis://localhost", {"host": "localhost", "port": 6379}, (), "", {}, id="plain"),
        pytest.param(
            "redis://:pw@h:7000/3?client_name=web-1",
            {"password": "pw", "db": 3, "client_name": "web-1", "host": "h", "port": 7000}, (), "", {},
            id="password-db-option",
        ),
        pytest.param("redis://h?db=4", {"db": 4, "host": "h", "port": 6379}, (), "", {}, id="db-as-option"),
        pytest.param(
            "rediss://app:p%40ss@h:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/c.key",
            {"username": "app", "password": "p@ss", "db": 0, "ssl_ca_certs": "/etc/ca.pem",
             "ssl_certfile": "/c.pem", "ssl_keyfile": "/c.key", "host": "h", "port": 6380}, (), "", {},
            id="tls-acl-client-cert",
        ),
        pytest.param(
            "rediss://h?ssl_cert_reqs=none",
            {"ssl_cert_reqs": "none", "ssl_check_hostname": False, "host": "h", "port": 6379}, (), "", {},
            id="tls-unverified",
        ),
        pytest.param(
            "unix://:pw@/run/redis.sock?db=2", {"password": "pw", "path": "/run/redis.sock", "db": 2}, (), "", {},
            id="unix",
        ),
        pytest.param(
            "redis+sentinel://app:pw@s1:26379,s2,[::1]:26380/mymaster/1?sentinel_password=spw",
            {"username": "app", "password": "pw", "db": 1},
            (("s1", 26379), ("s2", 26379), ("::1", 26380)), "mymaster", {"password": "spw"},
            id="sentinel",
        ),
        pytest.param(
            "rediss+sentinel://s1/mymaster?ssl_ca_certs=/ca.pem",
            {"ssl_ca_certs": "/ca.pem"}, (("s1", 26379),), "mymaster", {"ssl_ca_certs": "/ca.pem"},
            id="sentinel-tls",
        ),
    ],
)  # fmt: skip
def test_parse(url: str, connection: dict[str, Any], sentinels: tuple[Any, ...], service: str, sentinel: Any) -> None:
    address = parse(url)
    assert (address.connection, address.sentinels, address.service, address.sentinel) == (
        connection, sentinels, service, sentinel,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("http://h", "the scheme must be one of", id="scheme"),
        pytest.param("redis://h/1/2", "only the database number", id="path"),
        pytest.param("redis://h/x", "must be a number", id="db"),
        pytest.param("redis://h:port", "port must be a number", id="port"),
        pytest.param("redis://h?socket_timeout=9", "unknown option 'socket_timeout'", id="caller-owned-option"),
        pytest.param("redis://h?ssl_ca_certs=/ca.pem", "needs TLS", id="tls-option-without-tls"),
        pytest.param("redis://h?sentinel_password=x", "unknown option", id="sentinel-option-without-sentinel"),
        pytest.param("rediss://h?ssl_cert_reqs=maybe", "not a valid value", id="cert-reqs"),
        pytest.param("redis+sentinel://s1:26379", "name the monitored service", id="no-service"),
        pytest.param("unix://host/sock", "unix://[user:password@]/path", id="unix-host"),
    ],
)
def test_mistakes_fail_when_the_webhook_is_built(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[")):
        Webhook(auth=("u", "p"), broker_url=url)
    with pytest.raises(ConfigurationError):
        HealthCheck(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(f"redis://app:{SECRET}@h:1/0", "redis://app:***@h:1/0", id="acl"),
        pytest.param(f"rediss://:{SECRET}@h?ssl_ca_certs=/ca.pem", "rediss://:***@h?ssl_ca_certs=/ca.pem", id="tls"),
        pytest.param(f"unix://:{SECRET}@/tmp/s.sock", "unix://:***@/tmp/s.sock", id="unix"),
        pytest.param(
            f"redis+sentinel://app:{SECRET}@a,b/m?sentinel_password=x{SECRET}",
            "redis+sentinel://app:***@a,b/m?sentinel_password=***", id="sentinel",
        ),
        pytest.param(f"redis://app:{SECRET}@h?bogus=1", "redis://app:***@h?bogus=1", id="invalid-url"),
    ],
)  # fmt: skip
def test_redact_never_shows_a_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    try:
        parse(url)
    except ConfigurationError as exc:
        assert SECRET not in str(exc) and "***" in str(exc)


def test_the_callers_options_reach_the_connections_and_the_sentinels() -> None:
    client = sync_client("redis://h:1/2?client_name=x", socket_timeout=0.25)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.25
    assert client.connection_pool.connection_kwargs["client_name"] == "x"
    client.close()
    client = sync_client("rediss+sentinel://app:pw@s1,s2:26380/m/1?ssl_cert_reqs=none&sentinel_password=spw")
    pool = client.connection_pool
    assert (pool.service_name, pool.connection_kwargs["username"], pool.connection_kwargs["db"]) == ("m", "app", 1)
    assert issubclass(pool.connection_class, redis.sentinel.SentinelManagedSSLConnection)
    manager = client.manager  # type: ignore[attr-defined]
    first = manager.sentinels[0].connection_pool.connection_kwargs
    assert (first["password"], first["socket_timeout"], first["ssl_cert_reqs"]) == ("spw", SENTINEL_TIMEOUT, "none")
    assert (first["username"], first["db"]) == (None, 0)  # the servers' credentials are not the sentinels'
    client.close()


# -- real servers ------------------------------------------------------------------------------------


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return certificates(tmp_path / "certs")


@pytest.fixture
def tls_redis(tmp_path: Path, certs: Certificates) -> Iterator[TLSRedis]:
    (tmp_path / "tls").mkdir()
    users = {"app": (SECRET, "~wa-tls:* +@all -@dangerous +info"), "nobody": ("pw", "~* +ping")}
    server = TLSRedis(tmp_path / "tls", certs, users)
    server.start()
    yield server
    server.stop(signal.SIGKILL)


def test_tls_with_an_acl_user_sync_and_asyncio(tls_redis: TLSRedis) -> None:
    client = sync_client(tls_redis.url_for("app"))
    assert client.set("wa-tls:k", b"v") and client.get("wa-tls:k") == b"v"
    with pytest.raises(redis.exceptions.NoPermissionError) as denied:
        client.set("elsewhere", b"v")  # the ACL user's key pattern holds
    assert "ACL user may not run" in str(permanent_error(denied.value))
    client.close()

    async def ping() -> bool:
        aclient = async_client(tls_redis.url_for("app"))
        try:
            return bool(await aclient.ping())
        finally:
            await aclient.aclose()

    assert asyncio.run(ping())
    unverified = sync_client(
        tls_redis.url_for("app", ssl_cert_reqs="none").replace(f"ssl_ca_certs={tls_redis.certs.ca}&", "")
    )
    assert unverified.ping()
    unverified.close()


def test_refused_credentials_and_certificates_are_permanent_errors(tls_redis: TLSRedis) -> None:
    wrong = sync_client(tls_redis.url_for("app", "not-the-password"))
    with pytest.raises(redis.AuthenticationError) as refused:
        wrong.ping()
    reason = permanent_error(refused.value)
    assert reason is not None and "refused the credentials" in reason and "not-the-password" not in reason
    wrong.close()
    no_ca = sync_client(f"rediss://app:pw@127.0.0.1:{tls_redis.port}/0")
    with pytest.raises(redis.ConnectionError) as unverified:
        no_ca.ping()
    assert "did not verify" in str(permanent_error(unverified.value))
    no_ca.close()
    assert permanent_error(redis.ConnectionError("Connection refused")) is None
    assert permanent_error(redis.TimeoutError()) is None


def test_a_client_certificate(tmp_path: Path, certs: Certificates) -> None:
    (tmp_path / "mtls").mkdir()
    server = TLSRedis(tmp_path / "mtls", certs, {"app": ("pw", "~* +@all")}, client_certs=True)
    server.start()
    try:
        anonymous = sync_client(server.url_for("app"))
        with pytest.raises(redis.ConnectionError):
            anonymous.ping()
        anonymous.close()
        client = sync_client(
            server.url_for("app", ssl_certfile=str(certs.client_cert), ssl_keyfile=str(certs.client_key))
        )
        assert client.ping()
        client.close()
    finally:
        server.stop(signal.SIGKILL)


def test_unix_socket(tmp_path: Path) -> None:
    (tmp_path / "unix").mkdir()
    path = tmp_path / "unix" / "redis.sock"
    server = RedisServer(tmp_path / "unix", extra=("--unixsocket", str(path), "--requirepass", "pw"))
    server.start()
    try:
        client = sync_client(f"unix://:pw@{path}?db=1")
        assert client.ping() and client.connection_pool.connection_kwargs["db"] == 1
        client.close()
    finally:
        server.stop(signal.SIGKILL)


@pytest.fixture
def demoted(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """Two servers, the first of which a failover has just turned into a replica of the second."""
    servers = []
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        servers.append(RedisServer(tmp_path / name))
        servers[-1].start()
    old, new = servers
    yield old, new
    for server in servers:
        server.stop(signal.SIGKILL)


def test_a_demoted_primary_is_a_lost_connection_and_the_client_reconnects(
    demoted: tuple[RedisServer, RedisServer],
) -> None:
    old, new = demoted
    client = sync_client(old.url)
    assert client.set("k", b"1")
    old.client().replicaof("127.0.0.1", new.port)  # what Sentinel does to a primary it replaced
    with pytest.raises(redis.ConnectionError, match="read-only replica") as caught:
        client.set("k", b"2")
    assert isinstance(caught.value, TRANSIENT)  # the workers wait it out as any lost connection
    assert str(caught.value) == DEMOTED
    old.client().replicaof("no", "one")
    assert client.set("k", b"3")  # its next write connected again
    client.close()

    async def run() -> None:
        aclient = async_client(old.url)
        await aclient.set("k", b"4")
        old.client().replicaof("127.0.0.1", new.port)
        with pytest.raises(redis.ConnectionError, match="read-only replica"):
            await aclient.set("k", b"5")
        old.client().replicaof("no", "one")
        assert await aclient.set("k", b"6")
        await aclient.aclose()

    asyncio.run(run())


def test_a_connection_used_on_its_own_finds_the_primary_through_the_sentinels(tmp_path: Path) -> None:
    """redis-py connects a Sentinel-managed connection written to before it was connected (the request
    path's own connection) to localhost:6379; ours ask the sentinels first."""
    topology = Sentinels(tmp_path / "sentinel", count=1, quorum=1).start()
    command = b"*3\r\n$3\r\nSET\r\n$4\r\nhand\r\n$4\r\nmade\r\n"
    try:
        client = sync_client(topology.url)
        conn = client.connection_pool.make_connection()
        conn.send_packed_command([command])
        assert conn.read_response() == b"OK" and (conn.host, conn.port) == ("127.0.0.1", topology.primary.port)
        conn.disconnect()
        client.close()

        async def run() -> tuple[str, int]:
            aclient = async_client(topology.url)
            aconn = aclient.connection_pool.make_connection()
            await aconn.send_packed_command([command])
            assert await aconn.read_response() == b"OK"
            await aconn.disconnect()
            await aclient.aclose()
            return aconn.host, aconn.port

        assert asyncio.run(run()) == ("127.0.0.1", topology.primary.port)
        assert topology.primary.client().get("hand") == b"made"
    finally:
        topology.stop()
