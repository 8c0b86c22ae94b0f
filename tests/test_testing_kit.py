"""wa_middleware.testing: the builders, run(), post() and capture(), and the small bot of the README."""

from __future__ import annotations

import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
import redis

from wa_middleware import BasicAuth, EventContext, Message, Status, StopPropagation, Webhook, testing

# -- the small bot of the README -----------------------------------------------------------

bot = Webhook(auth=BasicAuth("360dialog", "s3cret"), api_keys=os.environ.get("D360_API_KEY"))
alerts: list[str] = []  # stands in for your alerting


@bot.on_message("text", text_regex=r"(?i)^(hi|hello)\b")
def greet(message: Message, ctx: EventContext) -> None:
    ctx.reply(f"Hello {ctx.sender_name}! Reply 'menu' to see what I can do.")
    raise StopPropagation  # the catch-all below must not answer a greeting too


@bot.on_message(reply_id=["yes", "no"])
def confirm(message: Message, ctx: EventContext) -> None:
    ctx.reply("Confirmed." if message.reply_id == "yes" else "Cancelled.")


@bot.on_message("text")
def echo(message: Message, ctx: EventContext) -> None:
    assert message.text is not None
    ctx.reply(f"You said: {message.text.body}")


@bot.on_status("failed")
def failed(status: Status) -> None:
    assert status.error is not None
    alerts.append(f"{status.id} failed with {status.error.code}")


def test_bot_greets_and_stops() -> None:
    result = testing.run(bot, testing.text("Hi there", sender="4915112345678", name="Ana"))
    assert result.ran(greet) and not result.ran(echo)
    assert result.replies == ["Hello Ana! Reply 'menu' to see what I can do."]
    assert result.outbox.sent[0].to == "4915112345678"


def test_bot_echoes() -> None:
    assert testing.run(bot, testing.text("weather?")).replies == ["You said: weather?"]


def test_bot_confirms_a_button() -> None:
    result = testing.run(bot, testing.button_reply("no", "No"))
    assert [call.callback.fn for call in result] == [confirm]
    assert result.replies == ["Cancelled."]


def test_bot_alerts_on_failed_status() -> None:
    testing.run(bot, testing.status("failed", message_id="wamid.OUT1", error_code=131047))
    assert alerts[-1] == "wamid.OUT1 failed with 131047"


def test_bot_handles_a_batch_in_order() -> None:
    batch = testing.text("hello") + testing.text("?") + testing.status("read") + testing.template_status()
    result = testing.run(bot, batch)
    assert [c.callback.fn for c in result] == [greet, echo]
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
        assert [c.name for c in testing.run(bot, form)] == [echo.__module__ + ".echo"]


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


# -- ids ------------------------------------------------------------------------------------


def _fresh_id_elsewhere() -> str:
    code = "from wa_middleware import testing; print(testing.text().events()[0].data.id)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_ids_are_unique_across_runs_processes_and_forks() -> None:
    mine = one(testing.text()).data.id
    assert mine.startswith("wamid.TEST")
    # Another run (a new process) starts elsewhere, never at the same first id.
    assert _fresh_id_elsewhere() not in {mine, _fresh_id_elsewhere()}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked child (gunicorn's workers, pytest-xdist) draws again
        os.write(write, one(testing.text()).data.id.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert child != one(testing.text()).data.id and child[:-6] != mine[:-6]
    statuses = {one(testing.status("read")).data.id for _ in range(3)}
    media = {one(testing.image()).data.media.id for _ in range(3)}
    assert len(statuses) == len(media) == 3


# -- post: through the app, into the in-memory store --------------------------------------------


def _unreachable(**options: Any) -> Webhook:
    """A webhook whose broker nothing answers: a test that reached it would get a 503."""
    return Webhook(auth=BasicAuth("360dialog", "s3cret"), broker_url="redis://127.0.0.1:9/0", **options)


def _starlette(wa: Webhook) -> Any:
    from starlette.applications import Starlette
    from wa_middleware.adapters.asgi import WebhookMiddleware

    app = Starlette()
    app.add_middleware(WebhookMiddleware, webhook=wa)
    return app


def _flask(wa: Webhook) -> Any:
    from flask import Flask
    from wa_middleware.adapters.wsgi import WebhookMiddleware

    app = Flask(__name__)
    app.wsgi_app = WebhookMiddleware(app.wsgi_app, webhook=wa)  # type: ignore[method-assign]
    return app


APPS = [pytest.param(_starlette, id="asgi"), pytest.param(_flask, id="wsgi")]


@pytest.mark.parametrize("make_app", APPS)
def test_post_stores_in_memory_and_runs_the_callbacks(make_app: Any) -> None:
    wa = _unreachable()
    seen: list[str] = []

    @wa.on_message("text")
    def on_text(message: Message, ctx: EventContext) -> None:
        assert message.text is not None
        seen.append(f"{message.text.body} {ctx.delivery_id}")

    app = make_app(wa)
    answer = testing.post(app, testing.text("hi") + testing.status("read"), auth=("360dialog", "s3cret"))
    (stored,) = answer.stored
    assert answer.json() == {"status": "stored"} and answer.store is not None and len(answer.store) == 1
    assert [event.kind for event in stored.events()] == ["message", "status"]
    assert stored.json()["object"] == "whatsapp_business_account" and stored.received_at > 0
    assert seen == []  # nothing runs before the test asks
    result = answer.run()
    assert result.ran(on_text) and seen == [f"hi {stored.message_id}"]
    assert answer.run().calls == []  # each delivery runs once, as in the worker
    refused = testing.post(app, testing.text("x"), auth=("360dialog", "wrong"), expect=401)
    assert refused.stored == ()
    with pytest.raises(AssertionError, match="stored nothing: it answered 401"):
        refused.run()
    # The slots are the webhook's own again: no stand-in left behind.
    assert wa._sync_enqueuer is None and isinstance(wa._async_enqueuers, weakref.WeakKeyDictionary)


def test_post_starts_no_broker_and_no_dev_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WA_BROKER_URL", raising=False)
    wa = Webhook(auth=BasicAuth("360dialog", "s3cret"), data_dir=tmp_path / "data", dev=True)
    for make_app in (_starlette, _flask):
        assert len(testing.post(make_app(wa), testing.text(), auth=("360dialog", "s3cret")).stored) == 1
    assert not (tmp_path / "data").exists() and wa._runtime is None  # no embedded server, no worker


def test_capture_serves_any_client_and_plays_the_worker() -> None:
    wa = _unreachable()

    @wa.on_message()
    def on_message(message: Message) -> None:
        pass

    app = _starlette(wa)
    client_class = testing._test_client_class()
    with testing.capture(wa) as store:
        with client_class(app) as client:
            for body in ("one", "two"):
                answer = client.post("/webhook", content=testing.text(body).to_bytes(), auth=("360dialog", "s3cret"))
                assert answer.status_code == 200
        # A post inside the block goes to the same store.
        assert testing.post(app, testing.text("three"), auth=("360dialog", "s3cret")).store is store
        with testing.capture(wa) as inner:
            assert inner is store
    assert len(store) == 3 and len(store.pending) == 3
    result = store.run()
    assert [call.data.text.body for call in result.calls_of(on_message)] == ["one", "two", "three"]
    assert store.pending == [] and store.run().calls == [] and len(store.deliveries) == 3
    store.clear()
    assert len(store) == 0


@pytest.mark.parametrize("make_app", APPS)
def test_an_unavailable_store_answers_503(make_app: Any) -> None:
    wa = _unreachable()
    app = make_app(wa)
    with testing.capture(wa) as store:
        store.available = False
        answer = testing.post(app, testing.text(), auth=("360dialog", "s3cret"), expect=503)
        assert answer.headers["retry-after"] == "5" and answer.stored == ()
        store.available = True
        testing.post(app, testing.text(), auth=("360dialog", "s3cret"))
    assert len(store) == 1


class _Hidden:
    """An ASGI app that keeps what it wraps where the kit does not look."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._inner(scope, receive, send)


def test_post_needs_the_webhook_to_keep_out_of_the_broker() -> None:
    from starlette.applications import Starlette

    with pytest.raises(LookupError, match="pass webhook=wa"):
        testing.post(Starlette(), testing.text())
    assert testing.post(Starlette(), testing.text(), broker=True, expect=404).status == 404
    # Given explicitly, the webhook is captured even where the kit could not find it.
    wa = _unreachable()
    from wa_middleware.adapters.asgi import WebhookMiddleware

    hidden = _Hidden(WebhookMiddleware(Starlette(), webhook=wa))
    assert len(testing.post(hidden, testing.text(), webhook=wa, auth=("360dialog", "s3cret")).stored) == 1


# -- post: lifespan --------------------------------------------------------------------------


def _lifespan_app(behaviour: str, events: list[str]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            if behaviour == "refuse":  # as Django's ASGI handler does
                raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")
            while True:
                message = await receive()
                events.append(f"{message['type']} asgi={scope['asgi']['version']}")
                if message["type"] == "lifespan.startup":
                    if behaviour == "fail":
                        await send({"type": "lifespan.startup.failed", "message": "no database"})
                        return
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


@pytest.mark.parametrize("behaviour", ["refuse", "support"])
def test_post_runs_the_lifespan_the_app_has(behaviour: str) -> None:
    from wa_middleware.adapters.asgi import WebhookMiddleware

    events: list[str] = []
    app = WebhookMiddleware(_lifespan_app(behaviour, events), webhook=_unreachable())
    assert len(testing.post(app, testing.text(), auth=("360dialog", "s3cret")).stored) == 1
    if behaviour == "support":
        assert events == ["lifespan.startup asgi=3.0", "lifespan.shutdown asgi=3.0"]


def test_post_reports_a_failed_startup() -> None:
    from wa_middleware.adapters.asgi import WebhookMiddleware

    app = WebhookMiddleware(_lifespan_app("fail", []), webhook=_unreachable())
    with pytest.raises(RuntimeError, match="lifespan startup failed: no database"):
        testing.post(app, testing.text(), auth=("360dialog", "s3cret"))


def test_the_readme_bot_through_an_app() -> None:
    app = _starlette(bot)  # as in the README's test_the_app_accepts_it: FastAPI with WebhookMiddleware
    answer = testing.post(app, testing.text("hi"), auth=("360dialog", "s3cret"))
    result = answer.run()
    assert result.ran(greet)
    assert result.replies == ["Hello Test User! Reply 'menu' to see what I can do."]
    testing.post(app, testing.text("hi"), auth=("360dialog", "wrong"), expect=401)


# -- post with broker=True: into the webhook's real broker (needs Redis) ------------------------


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
    answer = testing.post(app, testing.text("hi"), auth=("360dialog", "s3cret"), broker=True)
    assert answer.status == 200 and answer.stored == () and answer.store is None
    assert _stored(redis_url, namespace) == 1
    assert testing.post(app, testing.text("hi"), auth=("360dialog", "wrong"), expect=401, broker=True).status == 401
    with pytest.raises(AssertionError, match="expected 200, got 401"):
        testing.post(app, testing.text("hi"), broker=True)
    assert _stored(redis_url, namespace) == 1
    with pytest.raises(RuntimeError, match="broker=True"):
        answer.run()


def test_post_through_a_wsgi_app(redis_url: str, namespace: str) -> None:
    from flask import Flask
    from wa_middleware.adapters.wsgi import WebhookMiddleware

    wa = _app_webhook(redis_url, namespace)
    app = Flask(__name__)
    app.wsgi_app = WebhookMiddleware(app.wsgi_app, webhook=wa)  # type: ignore[method-assign]
    answer = testing.post(app, testing.status("read") + testing.text("x"), auth=("360dialog", "s3cret"), broker=True)
    assert answer.status == 200
    assert _stored(redis_url, namespace) == 1
    assert testing.post(app, b"not json", auth=("360dialog", "s3cret"), expect=400, broker=True).status == 400
    wa.close()


def test_post_finds_the_webhook_path(redis_url: str, namespace: str) -> None:
    from starlette.applications import Starlette
    from wa_middleware.adapters.asgi import WebhookMiddleware

    wa = Webhook(auth=BasicAuth("u", "p"), broker_url=redis_url, namespace=namespace, path="/hooks/whatsapp")
    app = Starlette()
    app.add_middleware(WebhookMiddleware, webhook=wa)
    assert testing._find_webhook(app) is wa
    assert testing.post(app, testing.reaction("wamid.X"), auth=("u", "p"), broker=True).status == 200
    assert testing.post(app, testing.text(), auth=("u", "p"), path="/elsewhere", expect=404, broker=True).status == 404
    assert _stored(redis_url, namespace) == 1


def test_run_records_replies_instead_of_sending_them() -> None:
    """``ctx.reply`` in a callback under `testing.run` goes to an outbox the test asserts on."""
    from wa_middleware import NoAuth, Webhook

    wa = Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:1/0")

    @wa.on_message("text")
    def echo(message: Message, ctx: EventContext) -> None:
        ctx.mark_read()
        ctx.reply(f"echo: {message.text.body if message.text else ''}")
        ctx.react("\N{THUMBS UP SIGN}")

    result = testing.run(wa, testing.text("hello", sender="4915100000099"))
    assert result.replies == ["echo: hello"]
    assert [sent.to for sent in result.outbox.sent] == ["4915100000099", "4915100000099"]
    assert len(result.outbox.reads) == 1
