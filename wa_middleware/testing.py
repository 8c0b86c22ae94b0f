"""Test your bot: build realistic deliveries and run your callbacks on them.

Builders (`text`, `image`, `button_reply`, `status`...) return a `Delivery` in the Cloud API
envelope, with sensible defaults that every keyword overrides, and fresh message ids (unique per
process and per run, so the worker's deduplication never hides a test's message); add deliveries
together (or pass them to `delivery`) to put several events in one. Then either

- `run` your `Webhook`'s callbacks on it, synchronously, with no Redis and no worker, through
  the decoder, the filters and the callback invocation that production uses; or
- `post` it through your own wrapped ASGI or WSGI app, as 360dialog would. What the app accepts
  goes to an in-memory `Store`, not to your broker (``broker=True`` asks for the real one);
  ``answer.run()`` then runs its callbacks. `capture` does the same for any client.

::

    from wa_middleware import testing

    def test_greets_back():
        result = testing.run(wa, testing.text("hi", sender="4915112345678"))
        assert result.names == ["bot.greet"]

    def test_the_app_accepts_it():
        answer = testing.post(app, testing.text("hi"), auth=("360dialog", "s3cret"))
        assert answer.run().names == ["bot.greet"]
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .errors import QueueUnavailable
from .events.callbacks import Callback
from .events.decode import Event, decode_delivery
from .events.run import pairs, run_callbacks

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send
    from starlette.types import Message as ASGIMessage

    from .webhook import Webhook

__all__ = [
    "BUSINESS_NUMBER",
    "PHONE_NUMBER_ID",
    "SENDER",
    "SENDER_NAME",
    "WABA_ID",
    "Answer",
    "Call",
    "Delivery",
    "Result",
    "Store",
    "Stored",
    "audio",
    "button",
    "button_reply",
    "capture",
    "change",
    "delivery",
    "document",
    "error",
    "flow_reply",
    "image",
    "list_reply",
    "location",
    "message",
    "post",
    "reaction",
    "run",
    "status",
    "sticker",
    "template_status",
    "text",
    "video",
]

#: Defaults of the builders, each overridable by keyword.
WABA_ID = "102290129340398"
PHONE_NUMBER_ID = "106540352242922"
BUSINESS_NUMBER = "15550783881"
SENDER = "16505551234"
SENDER_NAME = "Test User"


class _Ids:
    """Fresh ids for the builders: a random part drawn once per process (drawn again in a forked
    child), then a counter. The worker runs each message id's callbacks once, for days: ids that
    started again at 1 in every test run made a second run's new message a "duplicate", accepted
    with a 200 and never run."""

    def __init__(self) -> None:
        self._draw()
        os.register_at_fork(after_in_child=self._draw)

    def _draw(self) -> None:
        self.token = secrets.token_hex(5).upper()
        self._media = secrets.randbelow(9 * 10**8) + 10**8
        self._count = itertools.count(1)

    def wamid(self, prefix: str) -> str:
        return f"{prefix}{self.token}{next(self._count):06d}"

    def media(self) -> str:
        return f"{self._media}{next(self._count):06d}"


_ids = _Ids()


def _new_id(prefix: str = "wamid.TEST") -> str:
    return _ids.wamid(prefix)


def _now() -> str:
    return str(int(time.time()))


@dataclass
class _Part:
    waba_id: str
    field: str
    value: dict[str, Any]


@dataclass
class Delivery:
    """A webhook delivery in the Cloud API envelope, built from parts.

    ``a + b`` (or ``delivery(a, b, ...)``) puts several events in one delivery: parts of the
    ``messages`` field that share a business number merge into one ``value``, as WhatsApp
    batches them (in a value, messages come before statuses, and statuses before errors);
    other parts become changes of their own. Parts of different WABAs become separate entries.
    """

    parts: list[_Part] = field(default_factory=list)

    def __add__(self, other: Delivery) -> Delivery:
        if not isinstance(other, Delivery):
            return NotImplemented
        return Delivery([*self.parts, *other.parts])

    def to_dict(self) -> dict[str, Any]:
        """The delivery as JSON builtins."""
        entries: dict[str, list[dict[str, Any]]] = {}
        for part in self.parts:
            changes = entries.setdefault(part.waba_id, [])
            if part.field == "messages":
                target = next(
                    (
                        c["value"]
                        for c in changes
                        if c["field"] == "messages" and c["value"].get("metadata") == part.value.get("metadata")
                    ),
                    None,
                )
                if target is not None:
                    _merge(target, part.value)
                    continue
            changes.append({"value": _copy(part.value), "field": part.field})
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": waba_id, "changes": changes} for waba_id, changes in entries.items()],
        }

    def to_bytes(self) -> bytes:
        """The delivery as the request body WhatsApp would send."""
        return msgspec.json.encode(self.to_dict())

    def events(self) -> list[Event]:
        """The events this delivery decodes into."""
        return decode_delivery(self.to_bytes())


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    return msgspec.json.decode(msgspec.json.encode(value))  # type: ignore[no-any-return]


def _merge(target: dict[str, Any], value: dict[str, Any]) -> None:
    for key in ("contacts", "messages", "statuses", "errors"):
        for item in value.get(key, ()):
            items = target.setdefault(key, [])
            if key == "contacts" and item in items:
                continue
            items.append(_copy(item))


def delivery(*parts: Delivery) -> Delivery:
    """One delivery carrying all the given parts' events, in order."""
    out = Delivery()
    for part in parts:
        out = out + part
    return out


def _metadata(overrides: dict[str, Any]) -> dict[str, str]:
    return {
        "display_phone_number": str(overrides.pop("display_phone_number", BUSINESS_NUMBER)),
        "phone_number_id": str(overrides.pop("phone_number_id", PHONE_NUMBER_ID)),
    }


def message(type: str, content: Any = None, **overrides: Any) -> Delivery:
    """A message of any ``type`` (also one this library does not know), ``content`` under the type's key.

    :param sender: the sender's phone number (``from`` and the contact's ``wa_id``); ``""`` for none.
    :param user_id: the sender's business-scoped user id (``from_user_id`` and the contact's ``user_id``).
    :param name: the sender's profile name; None for no contact at all.
    :param id: the message id (default: a fresh ``wamid.TEST...``).
    :param timestamp: unix seconds (default: now).
    :param reply_to: the id of the message this one replies to (sets ``context``).
    :param phone_number_id: the receiving business number's id.
    :param display_phone_number: the receiving business number.
    :param waba_id: the WhatsApp Business Account id.

    Any other keyword is set on the message object as is (``referral={...}``, ``group_id="..."``).
    """
    waba_id = str(overrides.pop("waba_id", WABA_ID))
    metadata = _metadata(overrides)
    sender = str(overrides.pop("sender", SENDER))
    user_id = overrides.pop("user_id", None)
    name = overrides.pop("name", SENDER_NAME)
    reply_to = overrides.pop("reply_to", None)
    msg: dict[str, Any] = {}
    if sender:
        msg["from"] = sender
    if user_id:
        msg["from_user_id"] = user_id
    msg["id"] = overrides.pop("id", None) or _new_id()
    msg["timestamp"] = str(overrides.pop("timestamp", None) or _now())
    if reply_to is not None:
        msg["context"] = {"from": metadata["display_phone_number"], "id": reply_to}
    msg["type"] = type
    if content is not None:
        msg[type] = content
    msg.update(overrides)
    value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": metadata}
    if name is not None:
        contact: dict[str, Any] = {"profile": {"name": name}}
        if sender:
            contact["wa_id"] = sender
        if user_id:
            contact["user_id"] = user_id
        value["contacts"] = [contact]
    value["messages"] = [msg]
    return Delivery([_Part(waba_id, "messages", value)])


def text(body: str = "Hello", **overrides: Any) -> Delivery:
    """A text message. Keywords as for `message`."""
    return message("text", {"body": body}, **overrides)


def _media(kind: str, mime_type: str, extra: dict[str, Any], overrides: dict[str, Any]) -> Delivery:
    content: dict[str, Any] = {
        "mime_type": overrides.pop("mime_type", mime_type),
        "sha256": overrides.pop("sha256", "c0ffee" * 8),
        "id": str(overrides.pop("media_id", None) or _ids.media()),
    }
    content.update({key: value for key, value in extra.items() if value is not None})
    return message(kind, content, **overrides)


def image(caption: str | None = None, **overrides: Any) -> Delivery:
    """An image message; ``media_id``, ``mime_type``, ``sha256`` override the media fields."""
    return _media("image", "image/jpeg", {"caption": caption}, overrides)


def video(caption: str | None = None, **overrides: Any) -> Delivery:
    """A video message; media keywords as for `image`."""
    return _media("video", "video/mp4", {"caption": caption}, overrides)


def audio(*, voice: bool = True, **overrides: Any) -> Delivery:
    """An audio message, by default a voice note; media keywords as for `image`."""
    return _media("audio", "audio/ogg; codecs=opus", {"voice": voice}, overrides)


def document(filename: str = "file.pdf", caption: str | None = None, **overrides: Any) -> Delivery:
    """A document message; media keywords as for `image`."""
    return _media("document", "application/pdf", {"filename": filename, "caption": caption}, overrides)


def sticker(*, animated: bool = False, **overrides: Any) -> Delivery:
    """A sticker message; media keywords as for `image`."""
    return _media("sticker", "image/webp", {"animated": animated}, overrides)


def location(
    latitude: float = 52.520008,
    longitude: float = 13.404954,
    *,
    name: str | None = None,
    address: str | None = None,
    **overrides: Any,
) -> Delivery:
    """A location message (a named place when ``name``/``address`` are given)."""
    content: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    if name is not None:
        content["name"] = name
    if address is not None:
        content["address"] = address
    return message("location", content, **overrides)


def button_reply(id: str, title: str = "Yes", **overrides: Any) -> Delivery:
    """The user tapped a reply button of an interactive message you sent."""
    overrides.setdefault("reply_to", _new_id("wamid.SENT"))
    return message("interactive", {"type": "button_reply", "button_reply": {"id": id, "title": title}}, **overrides)


def list_reply(id: str, title: str = "Option", description: str | None = None, **overrides: Any) -> Delivery:
    """The user chose a row of a list message you sent."""
    row: dict[str, Any] = {"id": id, "title": title}
    if description is not None:
        row["description"] = description
    overrides.setdefault("reply_to", _new_id("wamid.SENT"))
    return message("interactive", {"type": "list_reply", "list_reply": row}, **overrides)


def flow_reply(response: Mapping[str, Any], *, name: str = "flow", body: str = "Sent", **overrides: Any) -> Delivery:
    """The user completed a WhatsApp Flow (``nfm_reply``); ``response`` becomes its ``response_json``."""
    reply = {"response_json": msgspec.json.encode(dict(response)).decode(), "body": body, "name": name}
    overrides.setdefault("reply_to", _new_id("wamid.SENT"))
    return message("interactive", {"type": "nfm_reply", "nfm_reply": reply}, **overrides)


def button(payload: str, text: str | None = None, **overrides: Any) -> Delivery:
    """The user tapped a quick-reply button of a template you sent (``type: "button"``)."""
    overrides.setdefault("reply_to", _new_id("wamid.SENT"))
    return message("button", {"payload": payload, "text": text if text is not None else payload}, **overrides)


def reaction(message_id: str, emoji: str | None = "\N{THUMBS UP SIGN}", **overrides: Any) -> Delivery:
    """A reaction to ``message_id``; ``emoji=None`` builds the removal form (no emoji)."""
    content: dict[str, Any] = {"message_id": message_id}
    if emoji is not None:
        content["emoji"] = emoji
    return message("reaction", content, **overrides)


def _error(code: int, title: str, message: str | None, details: str | None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "title": title, "message": message or title}
    err["error_data"] = {"details": details or title}
    err["href"] = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
    return err


def status(
    status: str = "delivered",
    *,
    message_id: str | None = None,
    recipient: str = SENDER,
    errors: Iterable[Mapping[str, Any]] | None = None,
    error_code: int = 131026,
    error_title: str = "Message undeliverable",
    pricing: bool = True,
    **overrides: Any,
) -> Delivery:
    """A status update of a message you sent: ``sent``, ``delivered``, ``read``, ``played``,
    ``failed``, ``deleted``, or any other value.

    :param message_id: the id of your message (default: a fresh one).
    :param recipient: the user you sent it to (``recipient_id``).
    :param errors: the status's errors; a ``failed`` status gets one with ``error_code`` and
        ``error_title`` unless given.
    :param pricing: add per-message ``pricing`` (not to failed statuses).

    ``timestamp``, ``phone_number_id``, ``display_phone_number``, ``waba_id`` as for `message`;
    any other keyword is set on the status object.
    """
    waba_id = str(overrides.pop("waba_id", WABA_ID))
    metadata = _metadata(overrides)
    st: dict[str, Any] = {
        "id": message_id or _new_id("wamid.SENT"),
        "status": status,
        "timestamp": str(overrides.pop("timestamp", None) or _now()),
        "recipient_id": recipient,
    }
    if errors is not None:
        st["errors"] = [dict(e) for e in errors]
    elif status == "failed":
        st["errors"] = [_error(error_code, error_title, None, None)]
    if pricing and status not in ("failed", "deleted"):
        st["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "utility", "type": "regular"}
    st.update(overrides)
    value = {"messaging_product": "whatsapp", "metadata": metadata, "statuses": [st]}
    return Delivery([_Part(waba_id, "messages", value)])


def error(
    code: int = 130429,
    title: str = "Rate limit hit",
    *,
    message: str | None = None,
    details: str | None = None,
    **overrides: Any,
) -> Delivery:
    """A value-level error (not tied to one message), in the newer error shape.

    ``phone_number_id``, ``display_phone_number``, ``waba_id`` as for `message`.
    """
    waba_id = str(overrides.pop("waba_id", WABA_ID))
    value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": _metadata(overrides)}
    err = _error(code, title, message, details)
    err.update(overrides)
    value["errors"] = [err]
    return Delivery([_Part(waba_id, "messages", value)])


def template_status(
    event: str = "APPROVED",
    *,
    name: str = "order_update",
    language: str = "en_US",
    template_id: int = 1234567890,
    reason: str | None = None,
    waba_id: str = WABA_ID,
    **overrides: Any,
) -> Delivery:
    """A ``message_template_status_update`` (``APPROVED``, ``REJECTED``, ``PAUSED``, ``DISABLED``...)."""
    value: dict[str, Any] = {
        "event": event,
        "message_template_id": template_id,
        "message_template_name": name,
        "message_template_language": language,
        "reason": reason if reason is not None else ("NONE" if event == "APPROVED" else "INCORRECT_CATEGORY"),
    }
    value.update(overrides)
    return change("message_template_status_update", value, waba_id=waba_id)


def change(field: str, value: Any, *, waba_id: str = WABA_ID) -> Delivery:
    """A change of any ``field`` with the given ``value``."""
    return Delivery([_Part(waba_id, field, value)])


# -- running callbacks -----------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One callback run on one event."""

    callback: Callback
    event: Event
    #: What the callback raised (only recorded with ``run(..., raise_errors=False)``).
    error: Exception | None = None

    @property
    def name(self) -> str:
        return self.callback.name

    @property
    def data(self) -> Any:
        """The event's struct: a `Message`, `Status`, `Error` or `Change`."""
        return self.event.data


@dataclass
class Result:
    """What `run` did: every decoded event, and the callbacks that ran, in order."""

    events: list[Event]
    calls: list[Call]
    #: What the callbacks sent with ``ctx.reply``/``react``/``mark_read``, recorded instead of sent
    #: (a `wa_middleware.messaging.Outbox`: ``.texts``, ``.sent``, ``.reads``); None without the
    #: ``reply`` extra (httpx).
    outbox: Any = None

    @property
    def replies(self) -> list[str]:
        """The texts the callbacks replied, in order (empty without the ``reply`` extra)."""
        return list(self.outbox.texts) if self.outbox is not None else []

    @property
    def names(self) -> list[str]:
        """Names of the callbacks that ran, in order (one per run)."""
        return [call.name for call in self.calls]

    def calls_of(self, callback: Callable[..., Any] | str) -> list[Call]:
        """The runs of one callback, given as the decorated function or its name."""
        return [call for call in self.calls if call.name == callback or call.callback.fn is callback]

    def ran(self, callback: Callable[..., Any] | str) -> bool:
        """Whether ``callback`` ran at least once."""
        return bool(self.calls_of(callback))

    @property
    def unhandled(self) -> list[Event]:
        """Events no callback ran on."""
        handled = {id(call.event) for call in self.calls}
        return [event for event in self.events if id(event) not in handled]

    def __iter__(self) -> Iterator[Call]:
        return iter(self.calls)


def _body(delivery: Delivery | bytes | str | Mapping[str, Any]) -> bytes:
    if isinstance(delivery, Delivery):
        return delivery.to_bytes()
    if isinstance(delivery, bytes):
        return delivery
    if isinstance(delivery, str):
        return delivery.encode()
    return msgspec.json.encode(dict(delivery))


def run(
    webhook: Webhook,
    delivery: Delivery | bytes | str | Mapping[str, Any],
    *,
    raise_errors: bool = True,
    delivery_id: str = "test-delivery",
    received_at: int | None = None,
) -> Result:
    """Run ``webhook``'s callbacks on ``delivery`` now, in this thread: no Redis, no worker.

    The delivery goes through the production decoder, filters and callback invocation (async
    callbacks included), event by event in delivery order and, for each event, callback by
    callback in registration order, honouring `StopPropagation`.

    :param webhook: your `Webhook`.
    :param delivery: a `Delivery` from the builders, or a body as bytes, str or dict.
    :param raise_errors: re-raise the first exception a callback raises (default). With False,
        record it in `Call.error` and go on, as the worker does (it would retry that callback).
    :param delivery_id: put into every event's context.
    :param received_at: put into every event's context (default: now).
    """
    received = received_at if received_at is not None else int(time.time() * 1000)
    events = decode_delivery(_body(delivery), delivery_id=delivery_id, received_at=received)
    calls: list[Call] = []
    outbox, around = _recorder()
    # The worker's own loop and error policy (`wa_middleware.events.run`).
    for outcome in run_callbacks(pairs(webhook.registry, events), around=around):
        if outcome.state == "skipped":
            continue  # an earlier callback raised StopPropagation
        error = outcome.error
        if error is not None and raise_errors:
            raise error
        assert error is None or isinstance(error, Exception)
        calls.append(Call(outcome.item.callback, outcome.item.event, error))
    return Result(events, calls, outbox)


def _recorder() -> tuple[Any, Any]:
    """An outbox recording what callbacks send, and the hook that gives each run its replies."""
    try:
        from .messaging import Outbox, Replies
    except ImportError:  # no httpx: ctx.reply() says what is missing
        return None, None
    from .events.replies import addressee, using

    outbox = Outbox()

    def around(pair: Any) -> Any:
        number, to, message_id = addressee(pair.event)
        return using(Replies(outbox, None, f"test|{pair.callback.name}", number, to, message_id))

    return outbox, around


# -- the in-memory store ---------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One delivery the webhook accepted: what it would have handed to the broker."""

    #: The queue message's id; the worker passes it to the callbacks as ``ctx.delivery_id``.
    message_id: str
    #: The request body, as received.
    body: bytes = field(repr=False)
    #: When it was accepted, in unix milliseconds (``ctx.received_at``).
    received_at: int

    def json(self) -> Any:
        """The body, decoded."""
        return msgspec.json.decode(self.body)

    def events(self) -> list[Event]:
        """The events the worker would decode from it."""
        return decode_delivery(self.body, delivery_id=self.message_id, received_at=self.received_at)


class Store:
    """The deliveries a webhook accepted while `capture` stood in for its broker, in the order
    they were stored (``len(store)``, ``store.deliveries``, iteration).

    `run` plays the worker: it runs the callbacks of what was stored and not run yet.

    :ivar available: set it to False and the next writes fail as when Redis is down (the app
        answers ``503`` with ``Retry-After`` and nothing is stored); True again to recover.
    """

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook
        self.available = True
        self._stored: list[Stored] = []
        self._done: set[str] = set()
        self._lock = threading.Lock()

    @property
    def deliveries(self) -> list[Stored]:
        """Every delivery stored, in order (also those already run)."""
        with self._lock:
            return list(self._stored)

    @property
    def pending(self) -> list[Stored]:
        """The deliveries whose callbacks have not run yet."""
        with self._lock:
            return [stored for stored in self._stored if stored.message_id not in self._done]

    def __len__(self) -> int:
        return len(self._stored)

    def __iter__(self) -> Iterator[Stored]:
        return iter(self.deliveries)

    def run(self, *, raise_errors: bool = True) -> Result:
        """Run the callbacks of every pending delivery, in the order they were stored, in this
        thread, as `testing.run` does, with the delivery id and time the worker would pass.

        Each delivery runs once, as in the worker; unlike the worker there is no deduplication
        by event (the same message posted twice runs twice). One `Result` for them all.
        """
        return self._run(None, raise_errors)

    def clear(self) -> None:
        """Forget every stored delivery."""
        with self._lock:
            self._stored.clear()
            self._done.clear()

    def _run(self, only: Iterable[Stored] | None, raise_errors: bool) -> Result:
        wanted = {stored.message_id for stored in (self.deliveries if only is None else only)}
        events: list[Event] = []
        calls: list[Call] = []
        outbox: Any = None
        while True:
            with self._lock:
                todo = next(
                    (s for s in self._stored if s.message_id not in self._done and s.message_id in wanted), None
                )
                if todo is None:
                    return Result(events, calls, outbox)
                # Marked before it runs: a callback that raises does not make it run again later.
                self._done.add(todo.message_id)
            result = run(
                self.webhook,
                todo.body,
                raise_errors=raise_errors,
                delivery_id=todo.message_id,
                received_at=todo.received_at,
            )
            events += result.events
            calls += result.calls
            if result.outbox is not None:
                if outbox is None:
                    outbox = result.outbox
                else:
                    outbox.calls.extend(result.outbox.calls)

    def _put(self, data: bytes) -> None:
        if not self.available:
            raise QueueUnavailable("the test made the in-memory store unavailable")
        # The queue message the core built (`wa_middleware.web.core.Core.finish`): its args are
        # what the worker's dispatch receives.
        body, received_at, message_id = msgspec.msgpack.decode(data)["args"][:3]
        with self._lock:
            self._stored.append(Stored(str(message_id), bytes(body), int(received_at)))

    def _ping(self) -> float:
        if not self.available:
            raise QueueUnavailable("the test made the in-memory store unavailable")
        return 0.0

    def __repr__(self) -> str:
        return f"<Store of {self.webhook!r}: {len(self)} stored, {len(self.pending)} pending>"


#: What the stand-ins report to the health check: no memory used, a policy that never evicts.
_MEMORY = {"used_bytes": 0, "max_bytes": 0, "policy": "noeviction"}


class _SyncStandIn:
    """Takes the place of the webhook's `SyncEnqueuer` (the WSGI adapter's): writes go to the store."""

    #: No Redis behind it: tells code that reaches the broker by other means (the health check's
    #: queue overview) that there is none to reach.
    in_memory = True

    def __init__(self, store: Store) -> None:
        self.store = store

    def enqueue(self, message_id: str, data: bytes) -> None:
        self.store._put(data)

    def ping(self) -> float:
        return self.store._ping()

    def memory(self) -> dict[str, Any]:
        return dict(_MEMORY)

    def close(self) -> None:
        pass


class _AsyncStandIn:
    """Takes the place of the webhook's `AsyncEnqueuer` of every event loop (the ASGI adapter's)."""

    #: No Redis behind it: tells code that reaches the broker by other means (the health check's
    #: queue overview) that there is none to reach.
    in_memory = True

    def __init__(self, store: Store) -> None:
        self.store = store

    async def enqueue(self, message_id: str, data: bytes) -> None:
        self.store._put(data)

    async def ping(self) -> float:
        return self.store._ping()

    async def memory(self) -> dict[str, Any]:
        return dict(_MEMORY)

    async def aclose(self) -> None:
        pass


class _EveryLoop:
    """Takes the place of the webhook's map of one enqueuer per event loop: every loop gets the
    stand-in, and nothing is added or removed while it is in place."""

    def __init__(self, enqueuer: _AsyncStandIn) -> None:
        self.enqueuer = enqueuer

    def get(self, loop: Any, default: Any = None) -> _AsyncStandIn:
        return self.enqueuer

    def pop(self, loop: Any, default: Any = None) -> _AsyncStandIn:
        return self.enqueuer

    def __getitem__(self, loop: Any) -> _AsyncStandIn:
        return self.enqueuer

    def __setitem__(self, loop: Any, value: Any) -> None:
        pass

    def __contains__(self, loop: Any) -> bool:
        return True


@contextlib.contextmanager
def capture(webhook: Webhook) -> Iterator[Store]:
    """Stand in for ``webhook``'s broker during the block: what its middleware accepts goes to the
    `Store` this yields, in memory, and nowhere else.

    Nothing connects to the broker: no Redis, no embedded server started, no dev worker, and no
    callback runs until you `Store.run` them. Any client that calls the wrapped app in this
    process works (``testing.post``, Starlette's ``TestClient``, Werkzeug's test ``Client``, httpx
    with an ASGI or WSGI transport). Inside an outer ``capture`` of the same webhook, this yields
    the outer store.

    ::

        with testing.capture(wa) as store:
            client.post("/webhook", content=testing.text("hi").to_bytes(), auth=("u", "p"))
        assert len(store) == 1
        assert store.run().ran(greet)
    """
    # The webhook's enqueuer slots (`Webhook.async_enqueuer`, `Webhook.sync_enqueuer`): both
    # adapters ask for the enqueuer on each request, and get what is in the slot when it is set.
    slots: Any = webhook
    current = slots._async_enqueuers
    if isinstance(current, _EveryLoop):
        yield current.enqueuer.store
        return
    store = Store(webhook)
    saved_sync = slots._sync_enqueuer
    slots._async_enqueuers = _EveryLoop(_AsyncStandIn(store))
    slots._sync_enqueuer = _SyncStandIn(store)
    try:
        yield store
    finally:
        slots._async_enqueuers = current
        slots._sync_enqueuer = saved_sync


# -- posting through your app ----------------------------------------------------------------


def _find_webhook(app: Any) -> Webhook | None:
    """The `Webhook` of the first wa-middleware adapter in a chain of wrapped apps.

    :raises ConfigurationError: for a mount that can never see the webhook's path (the
        middleware given to ``Litestar(middleware=[...])``).
    """
    from .webhook import Webhook

    seen: set[int] = set()
    node = app
    while node is not None and id(node) not in seen and len(seen) < 50:
        seen.add(id(node))
        if type(node).__module__.split(".")[0] == "litestar":
            import importlib

            # By name: the adapters are a directory of their own, mapped into the package on install.
            litestar = importlib.import_module("wa_middleware.adapters.litestar")
            litestar.check_middleware(getattr(node, "middleware", None) or ())
        found = getattr(node, "webhook", None)
        if isinstance(found, Webhook):
            return found
        # Starlette and FastAPI build their stack on the first request; until then it is declared here.
        for middleware in getattr(node, "user_middleware", None) or ():
            for value in (*getattr(middleware, "args", ()), *getattr(middleware, "kwargs", {}).values()):
                if isinstance(value, Webhook):
                    return value
        # Litestar: `wa_middleware.adapters.litestar.WebhookPlugin` in the app's plugins.
        plugins = getattr(node, "plugins", None)
        if isinstance(plugins, Iterable) and not isinstance(plugins, (str, bytes)):
            for plugin in plugins:
                if isinstance(getattr(plugin, "webhook", None), Webhook):
                    return plugin.webhook  # type: ignore[no-any-return]
        # Starlette and FastAPI keep the built stack in middleware_stack; Flask wraps wsgi_app.
        node = getattr(node, "middleware_stack", None) or getattr(node, "wsgi_app", None) or getattr(node, "app", None)
    return None


async def _close_loop_enqueuer(webhook: Webhook) -> None:
    import asyncio

    enqueuers = getattr(webhook, "_async_enqueuers", {})
    enqueuer = enqueuers.pop(asyncio.get_running_loop(), None)
    if enqueuer is not None:
        await enqueuer.aclose()


class _OptionalLifespan:
    """The lifespan as a server runs it, which Starlette's ``TestClient`` alone does not quite.

    - An app that refuses the scope outright (raises before taking or sending any message) runs
      without a lifespan, as under uvicorn's default ``--lifespan auto``. Django's ASGI handler
      does: ``ValueError: Django can only handle ASGI/HTTP connections, not lifespan.``
    - The scope says which ASGI version it speaks, as servers' do (Falcon refuses a lifespan
      scope without it, taking it for ASGI 2).
    - A startup the app reports failed raises, with the app's message, rather than leaving the
      client waiting for a shutdown the app will never answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        if "asgi" not in scope:
            scope = {**scope, "asgi": {"version": "3.0", "spec_version": "2.0"}}
        began = False
        failed: str | None = None

        async def tracked_receive() -> ASGIMessage:
            nonlocal began
            began = True
            return await receive()

        async def tracked_send(message: ASGIMessage) -> None:
            nonlocal began, failed
            began = True
            if message["type"] == "lifespan.startup.failed":
                failed = str(message.get("message", ""))
            await send(message)

        try:
            await self.app(scope, tracked_receive, tracked_send)
        except Exception:
            if began:
                raise
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if failed is not None:
            raise RuntimeError(f"the app's lifespan startup failed: {failed}")


def _test_client_class() -> Any:
    """Starlette's TestClient. Recent Starlette deprecates running it on ``httpx`` rather than
    ``httpx2``; which of the two the kit's requests travel on is no concern of the user's
    tests, so that one warning is silenced here (install ``httpx2`` and it never fires)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from starlette.testclient import TestClient
    return TestClient


@dataclass(frozen=True)
class Answer:
    """What the app answered, and what it stored."""

    status: int
    headers: dict[str, str]
    body: bytes
    #: What this post stored in the in-memory store (empty when the app refused the delivery, and
    #: with ``broker=True``, where it went to the broker).
    stored: tuple[Stored, ...] = ()
    #: The in-memory store the post went to (None with ``broker=True``).
    store: Store | None = field(default=None, repr=False, compare=False)

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    def run(self, *, raise_errors: bool = True) -> Result:
        """Run the callbacks on what this post stored, as `Store.run` does (each delivery once).

        :raises AssertionError: when the app stored nothing.
        """
        if self.store is None:
            raise RuntimeError("posted with broker=True: the delivery is in the broker, for a worker to run")
        if not self.stored:
            raise AssertionError(f"the app stored nothing: it answered {self.status}")
        return self.store._run(self.stored, raise_errors)


def post(
    app: Any,
    delivery: Delivery | bytes | str | Mapping[str, Any],
    *,
    auth: tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    path: str | None = None,
    expect: int | None = 200,
    interface: Literal["auto", "asgi", "wsgi"] = "auto",
    webhook: Webhook | None = None,
    broker: bool = False,
) -> Answer:
    """POST ``delivery`` to your wrapped app as 360dialog would, and check the answer.

    ASGI apps go through Starlette's ``TestClient`` (needs ``httpx``), WSGI apps through
    Werkzeug's test ``Client``. What the webhook accepts goes to an in-memory `Store` (see
    `capture`), never to your broker unless ``broker=True``: ``answer.stored`` holds it and
    ``answer.run()`` runs its callbacks. An ASGI app that refuses the lifespan scope (Django's)
    runs without one.

    :param app: your app with the middleware applied (FastAPI, Starlette, Flask, Django, Litestar...).
    :param auth: ``(user, password)`` for Basic auth, as configured on 360dialog's side.
    :param headers: extra request headers (a signature header, for instance).
    :param path: the webhook's path (default: the webhook's, else ``/webhook``).
    :param expect: the status the answer must have (AssertionError otherwise); None to skip the check.
    :param interface: ``"asgi"`` or ``"wsgi"``; by default told from ``app``.
    :param webhook: the `Webhook` the app serves; found in the middleware stack when not given.
    :param broker: store in the webhook's real broker, which must then be reachable, as in
        production (a worker runs the callbacks). With ASGI, the Redis connection made on the
        test client's event loop is closed before returning.
    :raises LookupError: when no webhook is given or found and ``broker`` is False.
    """
    import inspect

    request_headers = {"content-type": "application/json", "user-agent": "wa-middleware-testing"}
    if auth is not None:
        from .web.auth import BasicAuth

        request_headers["authorization"] = BasicAuth.header_value(*auth)
    request_headers.update(headers or {})
    body = _body(delivery)
    if interface == "auto":
        is_asgi = inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__)
        interface = "asgi" if is_asgi else "wsgi"
    webhook = webhook or _find_webhook(app)
    if webhook is None and not broker:
        raise LookupError(
            "testing.post found no wa-middleware Webhook in this app, so it cannot keep the delivery out of "
            "your broker: pass webhook=wa (or broker=True to store it for real)"
        )
    path = path or (webhook.path if webhook is not None else "/webhook")
    with contextlib.ExitStack() as stack:
        store = None if broker or webhook is None else stack.enter_context(capture(webhook))
        before = {stored.message_id for stored in store.deliveries} if store is not None else set()
        if interface == "asgi":
            with _test_client_class()(_OptionalLifespan(app)) as client:
                response = client.post(path, content=body, headers=request_headers)
                status, response_headers, content = response.status_code, dict(response.headers), response.content
                if broker and webhook is not None:
                    # The enqueuer is bound to this client's event loop, which ends with the client.
                    client.portal.call(_close_loop_enqueuer, webhook)
        else:
            from werkzeug.test import Client

            wsgi_response = Client(app).post(path, data=body, headers=request_headers)
            status, response_headers = wsgi_response.status_code, dict(wsgi_response.headers)
            content = wsgi_response.get_data()
        stored = tuple(s for s in store.deliveries if s.message_id not in before) if store is not None else ()
    answer = Answer(status, response_headers, content, stored, store)
    if expect is not None and answer.status != expect:
        raise AssertionError(f"expected {expect}, got {answer.status}: {answer.body[:500]!r}")
    return answer
