"""What the recipe tests share: the environment a recipe's processes run in, and the queue they fill."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from tests.conftest import APPS

ROOT = Path(__file__).resolve().parents[2]
#: The credentials every recipe's Webhook is configured with by default.
AUTH = ("360dialog", "s3cret")


@pytest.fixture
def recipe_env(redis_url: str, namespace: str, tmp_path: Path) -> dict[str, str]:
    """Environment of a recipe's server and worker: the test Redis, this test's namespace, the repository importable."""
    return {
        "WA_BROKER_URL": redis_url,
        "WA_NAMESPACE": namespace,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(APPS)]),
        "DJANGO_BOT_DB": str(tmp_path / "db.sqlite3"),
    }


def queued(redis_url: str, namespace: str) -> int:
    """Deliveries stored and not yet acknowledged by a worker."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.hlen(f"{namespace}:wa_middleware.msgs"))
    finally:
        client.close()
