"""wa_middleware.testing: the builders, run() and post(), and the small bot of the README."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from wa_middleware import BasicAuth, EventContext, Message, Status, StopPropagation, Webhook, testing

# -- the small bot of the README -----------------------------------------------------------

sent: list[tuple[str | None, str]] = []  # what the bot would send through 360dialog's API


def send(to: str | None, body: str) -> None:
    sent.append((to, body))


bot = Webhook(auth=BasicAuth("360dialog", "s3cret"))


@bot.on_message("text", text_regex=r"(?i)^(hi|hello)\b")
def greet(message: Message, ctx: EventContext) -> None:
    send(message.sender, f"Hello {ctx.sender_name}! Reply 'menu' to see what I can do.")
    raise StopPropagation  # the catch-all below must not answer a greeting too


@bot.on_message(reply_id=["yes", "no"])
def confirm(message: Message) -> None:
    send(message.sender, "Confirmed." if message.reply_id == "yes" else "Cancelled.")


@bot.on_message("text")
def fallback(message: Message) -> None:
    assert message.text is not None
    send(message.sender, f"Sorry, I don't understand {message.text.body!r}.")


@bot.on_status("failed")
def failed(status: Status) -> None:
    assert status.error is not None
    send(None, f"alert: {status.id} failed with {status.error.code}")


@pytest.fixture(autouse=True)
def _clear_outbox() -> None:
    sent.clear()


def test_bot_greets_and_stops() -> None:
    result = testing.run(bot, testing.text("Hi there", sender="4915112345678", name="Ana"))
    assert result.calls_of(greet) and not result.ran(fallback)
    assert sent == [("4915112345678", "Hello Ana! Reply 'menu' to see what I can do.")]


def test_bot_falls_back() -> None:
    testing.run(bot, testing.text("weather?"))
    assert sent == [(testing.SENDER, "Sorry, I don't understand 'weather?'.")]


def test_bot_confirms_a_button() -> None:
    result = testing.run(bot, testing.button_reply("no", "No"))
    assert [call.callback.fn for call in result] == [confirm]
    assert sent == [(testing.SENDER, "Cancelled.")]


def test_bot_alerts_on_failed_status() -> None:
    testing.run(bot, testing.status("failed", message_id="wamid.OUT1", error_code=131047))
    assert sent == [(None, "alert: wamid.OUT1 failed with 131047")]


def test_bot_handles_a_batch_in_order() -> None:
    batch = testing.text("hello") + testing.text("?") + testing.status("read") + testing.template_status()
    result = testing.run(bot, batch)
    assert [c.callback.fn for c in result] == [greet, fallback]
    assert [e.kind for e in result.unhandled] == ["status", "change"]


# -- builders --------------------------------------------------------------------------------


def one(delivery: testing.Delivery) -> Any:
    (event,) = delivery.events()
    return event


@pytest.mark.parametrize(
    "delivery,kind,selector",
    [
        pytest.param(testing.text(), "message", "text", id="text"),
        pytest.param(testing.image(), "message", "image", id="image"),
        pytest.param(testing.video(), "message", "video", id="video"),
        pytest.param(testing.audio(), "message", "audio", id="audio"),
        pytest.param(testing.document(), "message", "document", id="document"),
        pytest.param(testing.sticker(), "message", "sticker", id="sticker"),
        pytest.param(testing.location(), "message", "location", id="location"),
        pytest.param(testing.button_reply("b"), "message", "interactive", id="button-reply"),
        pytest.param(testing.list_reply("l"), "message", "interactive", id="list-reply"),
        pytest.param(testing.flow_reply({"a": 1}), "message", "interactive", id="flow-reply"),
        pytest.param(testing.button("P"), "message", "button", id="button"),
        pytest.param(testing.reaction("wamid.X"), "message", "reaction", id="reaction"),
        pytest.param(testing.message("hologram", {"frames": 3}), "message", "hologram", id="unknown-type"),
        pytest.param(testing.status("sent"), "status", "sent", id="sent"),
        pytest.param(testing.status("delivered"), "status", "delivered", id="delivered"),
        pytest.param(testing.status("read"), "status", "read", id="read"),
        pytest.param(testing.status("played"), "status", "played", id="played"),
        pytest.param(testing.status("failed"), "status", "failed", id="failed"),
        pytest.param(testing.status("deleted"), "status", "deleted", id="deleted"),
        pytest.param(testing.error(), "error", 130429, id="error"),
        pytest.param(testing.template_status("REJECTED"), "change", "message_template_status_update", id="template"),
        pytest.param(testing.change("account_update", {"event": "X"}), "change", "account_update", id="change"),
    ],
)
def test_each_builder_decodes_to_its_event(delivery: testing.Delivery, kind: str, selector: Any) -> None:
    event = one(delivery)
    assert event.kind == kind
    data = event.data
    got = {"message": getattr(data, "type", None), "status": getattr(data, "status", None)}.get(kind)
    if kind == "error":
        got = data.code
    elif kind == "change":
        got = data.field
    assert got == selector
    if kind == "message":
        assert event.ctx.phone_number_id == testing.PHONE_NUMBER_ID and event.ctx.sender_name == testing.SENDER_NAME
        assert data.from_ == testing.SENDER and data.datetime is not None
        assert (data.raw is not None) == (selector == "hologram")


def test_builder_overrides() -> None:
    event = one(
        testing.text(
            "hi", sender="491", name="Ana", id="wamid.MINE", timestamp=1700000000, reply_to="wamid.PREV",
            phone_number_id="pn", display_phone_number="1555", waba_id="w", group_id="g1",
        )
    )  # fmt: skip
    message = event.data
    assert (message.id, message.from_, message.timestamp, message.in_reply_to) == (
        "wamid.MINE",
        "491",
        "1700000000",
        "wamid.PREV",
    )
    assert message.group_id == "g1"
    assert (event.ctx.phone_number_id, event.ctx.waba_id, event.ctx.sender_name) == ("pn", "w", "Ana")


def test_builder_defaults_are_realistic() -> None:
    assert one(testing.reaction("wamid.X", None)).data.reaction.removed
    assert one(testing.flow_reply({"a": 1})).data.interactive.nfm_reply.response == {"a": 1}
    failed = one(testing.status("failed")).data
    assert failed.error.code == 131026 and failed.error.detail and failed.pricing is None
    assert one(testing.status("read")).data.pricing.pricing_model == "PMP"
    assert one(testing.document()).data.media.filename == "file.pdf"
    assert one(testing.audio()).data.media.voice is True
    assert one(testing.text(sender="", user_id="US.9")).data.sender == "US.9"
    assert one(testing.text(name=None)).ctx.contact is None
    assert one(testing.template_status()).data.typed.event == "APPROVED"
    ids = {one(testing.text()).data.id for _ in range(5)}
    assert len(ids) == 5  # fresh ids, so deduplication never hides a test's second message


def test_several_events_in_one_delivery() -> None:
    delivery = testing.delivery(
        testing.text("a", sender="1", name="One"),
        testing.text("b", sender="2", name="Two"),
        testing.status("read"),
        testing.text("c", phone_number_id="other"),
        testing.template_status(),
        testing.error(waba_id="w2"),
    )
    body = delivery.to_dict()
    first_value = body["entry"][0]["changes"][0]["value"]
    assert len(first_value["messages"]) == 2 and len(first_value["statuses"]) == 1
    assert [c["wa_id"] for c in first_value["contacts"]] == ["1", "2"]
    assert [e["id"] for e in body["entry"]] == [testing.WABA_ID, "w2"]
    summary = [(e.kind, e.ctx.phone_number_id, e.ctx.sender_name) for e in delivery.events()]
    assert summary == [
        ("message", testing.PHONE_NUMBER_ID, "One"),
        ("message", testing.PHONE_NUMBER_ID, "Two"),
        ("status", testing.PHONE_NUMBER_ID, None),
        ("message", "other", testing.SENDER_NAME),
        ("change", None, None),
        ("error", testing.PHONE_NUMBER_ID, None),
    ]


def test_bytes_and_dicts_are_accepted() -> None:
    delivery = testing.text("x")
    for form in (delivery.to_bytes(), delivery.to_dict(), delivery.to_bytes().decode()):
        assert [c.name for c in testing.run(bot, form)] == [fallback.__module__ + ".fallback"]


# -- run -------------------------------------------------------------------------------------


def test_run_raises_what_a_callback_raised() -> None:
    wa = Webhook(auth=BasicAuth("u", "p"))

    @wa.on_message()
    async def broken(message: Message) -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        testing.run(wa, testing.text())
    result = testing.run(wa, testing.text(), raise_errors=False)
    assert isinstance(result.calls[0].error, KeyError)


def test_run_passes_the_context() -> None:
    wa = Webhook(auth=BasicAuth("u", "p"))
    seen: list[EventContext] = []

    @wa.on_message()
    def record(message: Message, ctx: EventContext) -> None:
        seen.append(ctx)

    testing.run(wa, testing.text(), delivery_id="d-42", received_at=5)
    assert (seen[0].delivery_id, seen[0].received_at, seen[0].waba_id) == ("d-42", 5, testing.WABA_ID)


# -- post through the user's app (needs Redis) ------------------------------------------------


def _app_webhook(redis_url: str, namespace: str) -> Webhook:
    return Webhook(auth=BasicAuth("360dialog", "s3cret"), broker_url=redis_url, namespace=namespace)


def _stored(redis_url: str, namespace: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.hlen(f"{namespace}:wa_middleware.msgs"))
    finally:
        client.close()


def test_post_through_an_asgi_app(redis_url: str, namespace: str) -> None:
    from starlette.applications import Starlette
    from wa_middleware.adapters.asgi import WebhookMiddleware

    wa = _app_webhook(redis_url, namespace)
    app = Starlette()
    app.add_middleware(WebhookMiddleware, webhook=wa)
    answer = testing.post(app, testing.text("hi"), auth=("360dialog", "s3cret"))
    assert answer.status == 200
    assert _stored(redis_url, namespace) == 1
    assert testing.post(app, testing.text("hi"), auth=("360dialog", "wrong"), expect=401).status == 401
    with pytest.raises(AssertionError, match="expected 200, got 401"):
        testing.post(app, testing.text("hi"))
    assert _stored(redis_url, namespace) == 1


def test_post_through_a_wsgi_app(redis_url: str, namespace: str) -> None:
    from flask import Flask
    from wa_middleware.adapters.wsgi import WebhookMiddleware

    wa = _app_webhook(redis_url, namespace)
    app = Flask(__name__)
    app.wsgi_app = WebhookMiddleware(app.wsgi_app, webhook=wa)  # type: ignore[method-assign]
    answer = testing.post(app, testing.status("read") + testing.text("x"), auth=("360dialog", "s3cret"))
    assert answer.status == 200
    assert _stored(redis_url, namespace) == 1
    assert testing.post(app, b"not json", auth=("360dialog", "s3cret"), expect=400).status == 400


def test_post_finds_the_webhook_path(redis_url: str, namespace: str) -> None:
    from starlette.applications import Starlette
    from wa_middleware.adapters.asgi import WebhookMiddleware

    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, path="/hooks/whatsapp")
    app = Starlette()
    app.add_middleware(WebhookMiddleware, webhook=wa)
    assert testing._find_webhook(app) is wa
    assert testing.post(app, testing.reaction("wamid.X"), auth=("u", "p")).status == 200
    assert testing.post(app, testing.text(), auth=("u", "p"), path="/elsewhere", expect=404).status == 404
    assert _stored(redis_url, namespace) == 1
