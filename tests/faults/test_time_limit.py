"""A callback over dramatiq's time limit is retried alone: the other callbacks of its delivery run once."""

from __future__ import annotations

import time

import dramatiq
from dramatiq.middleware import TimeLimit

from tests.conftest import wait_until
from tests.faults.harness import text_delivery
from wa_middleware import BasicAuth, Message, Webhook
from wa_middleware.worker.encoder import install


def test_time_limit_is_a_unit_failure(redis_url: str, namespace: str) -> None:
    wa = Webhook(
        auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, max_retries=1, min_backoff=50,
        max_backoff=100, recovery_timeout=2,
    )  # fmt: skip
    runs: dict[str, int] = {"slow": 0, "fast": 0}

    @wa.on_message("text")
    def slow(message: Message) -> None:
        runs["slow"] += 1
        if runs["slow"] == 1:
            time.sleep(5)  # interrupted by the 1 s time limit

    @wa.on_message()
    def fast(message: Message) -> None:
        runs["fast"] += 1

    install()
    broker = wa.broker
    for middleware in broker.middleware:
        if isinstance(middleware, TimeLimit):
            middleware.time_limit = 1000
            middleware.interval = 100
    job = wa.core.finish({"authorization": "Basic dTpw"}, text_delivery("491", "hi", "wamid.TL"))
    broker.client.hset(f"{namespace}:wa_middleware.msgs", job.message_id, job.data)
    broker.client.rpush(f"{namespace}:wa_middleware", job.message_id)
    broker.emit_after("process_boot")  # starts the time limit's watchdog, as dramatiq's CLI does
    worker = dramatiq.Worker(broker, queues={"wa_middleware"}, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        wait_until(lambda: runs["slow"] >= 2, timeout=20)
        time.sleep(0.5)
    finally:
        worker.stop()
    assert runs == {"slow": 2, "fast": 1}
