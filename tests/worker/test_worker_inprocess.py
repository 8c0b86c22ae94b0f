"""The worker's dispatcher in-process (a dramatiq Worker thread) against a real Redis."""

from __future__ import annotations

import time

import dramatiq
import pytest

from wa_middleware import BasicAuth, Message, StopPropagation, Webhook, testing
from wa_middleware.worker.encoder import install


def drain(wa: Webhook, timeout: float = 20.0) -> None:
    install()
    worker = dramatiq.Worker(wa.broker, queues={wa.queue_name}, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        client = wa.broker.client
        deadline = time.monotonic() + timeout
        while client.hlen(f"{wa.namespace}:{wa.queue_name}.msgs") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.hlen(f"{wa.namespace}:{wa.queue_name}.msgs") == 0
    finally:
        worker.stop()


def test_stop_propagation_and_dedupe_in_the_worker(redis_url: str, namespace: str) -> None:
    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace)
    ran: list[str] = []

    @wa.on_message("text", text_prefix="stop")
    def stopper(message: Message) -> None:
        ran.append(f"stopper:{message.id}")
        raise StopPropagation

    @wa.on_message()
    def later(message: Message) -> None:
        ran.append(f"later:{message.id}")

    enqueuer = wa.sync_enqueuer()
    delivery = testing.text("stop here", id="wamid.S") + testing.text("go on", id="wamid.G")
    for _ in range(3):  # the same notification delivered three times
        job = wa.core.finish({}, delivery.to_bytes())
        enqueuer.enqueue(job.message_id, job.data)
    drain(wa)
    wa.close()
    assert sorted(ran) == ["later:wamid.G", "stopper:wamid.S"]
    assert wa.stats().get("duplicates", 0) >= 4


@pytest.fixture(autouse=True)
def _restore_encoder() -> object:
    previous = dramatiq.get_encoder()
    yield None
    dramatiq.set_encoder(previous)
