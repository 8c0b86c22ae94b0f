"""A message that cannot be planned (a body that is not JSON, or a message id that is not text, as
only a foreign producer could send) does not block the queue behind it: it is taken, fails, and
lands in the dead letters."""

from __future__ import annotations

import time
import uuid

import dramatiq
import msgspec
import pytest

from tests.conftest import wait_until
from tests.faults.harness import text_delivery
from wa_middleware import BasicAuth, Message, Webhook
from wa_middleware.ops.deadletters import DeadLetters
from wa_middleware.worker.encoder import install


@pytest.mark.parametrize(
    "shape",
    [pytest.param("body", id="body-not-json"), pytest.param("message_id", id="message-id-not-text")],
)
def test_poison_message_goes_to_dead_letters(redis_url: str, namespace: str, shape: str) -> None:
    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, max_retries=0)
    seen: list[str | None] = []

    @wa.on_message()
    def record(message: Message) -> None:
        seen.append(message.id)

    install()
    broker = wa.broker
    queue = f"{namespace}:wa_middleware"
    poison_id = str(uuid.uuid4())
    fields = {
        "queue_name": "wa_middleware",
        "actor_name": "wa.dispatch",
        "args": [b"not json", 0, poison_id],
        "kwargs": {},
        "options": {"redis_message_id": poison_id},
        "message_id": poison_id,
        "message_timestamp": int(time.time() * 1000),
    }
    if shape == "message_id":  # a valid delivery, under an id that is not text (not UTF-8, even)
        fields["args"] = [text_delivery("491", "hi", "wamid.POISON"), 0, poison_id]
        fields["message_id"] = b"\xff\xfe" + poison_id.encode()
    poison = msgspec.msgpack.encode(fields)
    good = wa.core.finish({}, text_delivery("491", "hi", "wamid.AFTER.POISON"))
    for mid, data in ((poison_id, poison), (good.message_id, good.data)):
        broker.client.hset(f"{queue}.msgs", mid, data)
        broker.client.rpush(queue, mid)
    worker = dramatiq.Worker(broker, queues={"wa_middleware"}, worker_threads=2, worker_timeout=100)
    worker.start()
    letters = DeadLetters(wa)
    try:
        wait_until(lambda: seen == ["wamid.AFTER.POISON"], timeout=30)
        found = wait_until(letters.list, timeout=30)
    finally:
        worker.stop()
        letters.close()
    assert [letter.message["message_id"] for letter in found] == [fields["message_id"]]
