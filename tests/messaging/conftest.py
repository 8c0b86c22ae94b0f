"""Fixtures of the messaging tests: the local stand-in API, a Redis client and a key prefix of the test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from .standin import StandIn

KEY = "d360-SECRET-key-0123456789"
TOKEN = "EAAG-SECRET-token-9876543210"
NUMBER = "106540352242922"
USER = "4915112345678"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = StandIn().start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(namespace: str) -> str:
    """Under the test's namespace, which the ``namespace`` fixture cleans up."""
    return f"{namespace}:wa"
