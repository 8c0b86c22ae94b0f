"""Callback filters, their validation at decoration time, ordering and StopPropagation."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from wa_middleware import BasicAuth, ConfigurationError, Message, StopPropagation, Webhook, testing
from wa_middleware.events.filters import compile_filters


def webhook() -> Webhook:
    return Webhook(auth=BasicAuth("u", "p"))


def matches(decorator: str, args: tuple[Any, ...], kwargs: dict[str, Any], delivery: testing.Delivery) -> bool:
    wa = webhook()
    getattr(wa, decorator)(*args, **kwargs)(lambda data: None)
    (event,) = delivery.events()
    return bool(wa.registry.matching(event))


OTHER_NUMBER = {"phone_number_id": "999", "display_phone_number": "15559999999"}

CASES = [
    # positional filters
    pytest.param("on_message", (), {}, testing.text("hi"), True, id="message-any"),
    pytest.param("on_message", ("text",), {}, testing.text("hi"), True, id="message-type"),
    pytest.param("on_message", ("image", "video"), {}, testing.text("hi"), False, id="message-other-type"),
    pytest.param("on_message", (), {}, testing.message("hologram", {"x": 1}), True, id="message-unknown-type"),
    pytest.param("on_status", ("read",), {}, testing.status("read"), True, id="status-value"),
    pytest.param("on_status", ("read",), {}, testing.status("delivered"), False, id="status-other-value"),
    pytest.param("on_error", (130429,), {}, testing.error(130429), True, id="error-code-int"),
    pytest.param("on_error", ("130429",), {}, testing.error(130429), True, id="error-code-str"),
    pytest.param("on_error", (131000,), {}, testing.error(130429), False, id="error-other-code"),
    pytest.param("on_change", ("message_template_status_update",), {}, testing.template_status(), True, id="change"),
    pytest.param("on_change", ("account_update",), {}, testing.template_status(), False, id="change-other-field"),
    # phone number and WABA: one deployment, several numbers
    pytest.param("on_message", (), {"phone_number_id": testing.PHONE_NUMBER_ID}, testing.text(), True, id="number"),
    pytest.param("on_message", (), {"phone_number_id": "999"}, testing.text(), False, id="number-other"),
    pytest.param(
        "on_message", (), {"phone_number_id": ["1", "999"]}, testing.text(**OTHER_NUMBER), True, id="number-any"
    ),
    pytest.param("on_message", (), {"phone_number_id": 999}, testing.text(**OTHER_NUMBER), True, id="number-int"),
    pytest.param("on_status", (), {"phone_number_id": "999"}, testing.status(**OTHER_NUMBER), True, id="status-number"),
    pytest.param("on_error", (), {"phone_number_id": "999"}, testing.error(), False, id="error-number-other"),
    pytest.param("on_message", (), {"waba_id": testing.WABA_ID}, testing.text(), True, id="waba"),
    pytest.param("on_change", (), {"waba_id": "1"}, testing.template_status(), False, id="waba-other"),
    pytest.param(
        "on_change", (), {"phone_number_id": "1"}, testing.template_status(), False, id="change-has-no-number"
    ),
    # sender / recipient
    pytest.param("on_message", (), {"sender": "4915"}, testing.text(sender="4915"), True, id="sender"),
    pytest.param("on_message", (), {"sender": "4915"}, testing.text(sender="4916"), False, id="sender-other"),
    pytest.param(
        "on_message", (), {"sender": "US.1"}, testing.text(sender="", user_id="US.1"), True, id="sender-bsuid"
    ),
    pytest.param("on_status", (), {"recipient": "4915"}, testing.status(recipient="4915"), True, id="recipient"),
    pytest.param("on_status", (), {"recipient": "4915"}, testing.status(recipient="1"), False, id="recipient-other"),
    # text
    pytest.param("on_message", (), {"text": "menu"}, testing.text("menu"), True, id="text-exact"),
    pytest.param("on_message", (), {"text": "menu"}, testing.text("Menu"), False, id="text-exact-case"),
    pytest.param("on_message", (), {"text": ["yes", "y"]}, testing.text("y"), True, id="text-any"),
    pytest.param("on_message", (), {"text": "menu"}, testing.image(caption="menu"), False, id="text-not-caption"),
    pytest.param("on_message", (), {"text_prefix": "/"}, testing.text("/help"), True, id="prefix"),
    pytest.param("on_message", (), {"text_prefix": ("/", "!")}, testing.text("!help"), True, id="prefix-any"),
    pytest.param("on_message", (), {"text_prefix": "/"}, testing.text("help"), False, id="prefix-other"),
    pytest.param("on_message", (), {"text_regex": r"(?i)^order #\d+$"}, testing.text("ORDER #12"), True, id="regex"),
    pytest.param(
        "on_message", (), {"text_regex": re.compile(r"\d{4}")}, testing.text("pin 1234"), True, id="re-compiled"
    ),
    pytest.param("on_message", (), {"text_regex": r"^\d+$"}, testing.text("12a"), False, id="regex-other"),
    pytest.param("on_message", (), {"text_regex": "x"}, testing.button("x"), False, id="regex-not-button"),
    # replies
    pytest.param("on_message", (), {"reply_id": "yes"}, testing.button_reply("yes"), True, id="reply-button"),
    pytest.param("on_message", (), {"reply_id": "row-1"}, testing.list_reply("row-1"), True, id="reply-list"),
    pytest.param("on_message", (), {"reply_id": "STOP"}, testing.button("STOP"), True, id="reply-template-button"),
    pytest.param("on_message", (), {"reply_id": "yes"}, testing.button_reply("no"), False, id="reply-other"),
    pytest.param("on_message", (), {"reply_id": "yes"}, testing.text("yes"), False, id="reply-not-text"),
    # error codes
    pytest.param("on_status", ("failed",), {"error_code": 131026}, testing.status("failed"), True, id="status-error"),
    pytest.param(
        "on_status", (), {"error_code": [1, 131047]}, testing.status("failed", error_code=131047), True, id="status-any"
    ),
    pytest.param("on_status", (), {"error_code": 131026}, testing.status("read"), False, id="status-no-errors"),
    pytest.param(
        "on_message",
        (),
        {"error_code": 131051},
        testing.message("unsupported", {"type": "x"}, errors=[{"code": 131051, "title": "t"}]),
        True,
        id="message-errors",
    ),
    # changes by event
    pytest.param("on_change", (), {"event": "APPROVED"}, testing.template_status("APPROVED"), True, id="event"),
    pytest.param("on_change", (), {"event": "REJECTED"}, testing.template_status("APPROVED"), False, id="event-other"),
    pytest.param("on_change", (), {"event": "X"}, testing.change("f", [1]), False, id="event-value-not-object"),
    # custom predicate, with or without the context
    pytest.param("on_message", (), {"when": lambda m: m.id.startswith("wamid.")}, testing.text(), True, id="when"),
    pytest.param(
        "on_message",
        (),
        {"when": lambda m, ctx: ctx.sender_name == "Ana"},
        testing.text(name="Ana"),
        True,
        id="when-ctx",
    ),
    pytest.param("on_message", (), {"when": lambda m: False}, testing.text(), False, id="when-false"),
    # combined: all must hold
    pytest.param(
        "on_message",
        ("text",),
        {"phone_number_id": testing.PHONE_NUMBER_ID, "sender": testing.SENDER, "text_prefix": "/"},
        testing.text("/start"),
        True,
        id="combined",
    ),
    pytest.param(
        "on_message",
        ("text",),
        {"phone_number_id": "999", "sender": testing.SENDER, "text_prefix": "/"},
        testing.text("/start"),
        False,
        id="combined-one-fails",
    ),
]


@pytest.mark.parametrize("decorator,args,kwargs,delivery,expected", CASES)
def test_filter(
    decorator: str, args: tuple[Any, ...], kwargs: dict[str, Any], delivery: testing.Delivery, expected: bool
) -> None:
    assert matches(decorator, args, kwargs, delivery) is expected


BAD = [
    pytest.param("on_message", (), {"text_regex": "("}, "does not compile", id="bad-regex"),
    pytest.param("on_message", (), {"text_regex": ""}, "non-empty pattern", id="empty-regex"),
    pytest.param("on_message", (), {"text": ""}, "non-empty", id="empty-text"),
    pytest.param("on_message", (), {"text": []}, "at least one", id="no-text"),
    pytest.param("on_message", (), {"sender": [None]}, "non-empty strings", id="sender-none"),
    pytest.param("on_message", (), {"phone_number_id": 1.5}, "a string or a collection", id="number-float"),
    pytest.param("on_message", ("image",), {"text": "hi"}, "never matches", id="text-on-image"),
    pytest.param("on_message", ("text",), {"reply_id": "x"}, "never matches", id="reply-on-text"),
    pytest.param("on_message", (), {"error_code": "abc"}, "integer error codes", id="code-not-int"),
    pytest.param("on_message", (), {"when": 5}, "callable", id="when-not-callable"),
    pytest.param("on_message", ("",), {}, "invalid filter value", id="empty-type"),
    pytest.param("on_message", (True,), {}, "invalid filter value", id="bool-type"),
    pytest.param("on_error", ("rate",), {}, "integer error codes", id="error-code-word"),
]


@pytest.mark.parametrize("decorator,args,kwargs,message", BAD)
def test_bad_filters_fail_at_decoration(
    decorator: str, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    wa = webhook()
    with pytest.raises(ConfigurationError, match=message):
        getattr(wa, decorator)(*args, **kwargs)  # before any function is decorated
    assert wa.registry.callbacks == []


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        pytest.param("status", {"text": "x"}, id="text-on-status"),
        pytest.param("status", {"sender": "x"}, id="sender-on-status"),
        pytest.param("message", {"recipient": "x"}, id="recipient-on-message"),
        pytest.param("error", {"reply_id": "x"}, id="reply-on-error"),
        pytest.param("change", {"error_code": 1}, id="code-on-change"),
        pytest.param("message", {"event": "x"}, id="event-on-message"),
    ],
)
def test_filters_of_another_kind(kind: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        compile_filters(kind, (), **kwargs)


def test_text_filter_implies_text_type() -> None:
    accepted, predicates = compile_filters("message", (), text_prefix="/")
    assert accepted == frozenset({"text"}) and len(predicates) == 1
    accepted, _ = compile_filters("message", ("text", "image"), text="x")
    assert accepted == frozenset({"text"})
    accepted, _ = compile_filters("message", (), reply_id="x")
    assert accepted == frozenset({"interactive", "button"})


def test_bare_and_called_decorators() -> None:
    wa = webhook()

    @wa.on_message
    def bare(message: Message) -> None: ...

    @wa.on_message()
    def called(message: Message) -> None: ...

    @wa.on_error
    def bare_error(error: Any) -> None: ...

    assert [cb.name.rsplit(".", 1)[-1] for cb in wa.registry.callbacks] == ["bare", "called", "bare_error"]
    assert callable(bare) and callable(called)  # decorators return the function itself


def ordered_webhook(log: list[str]) -> Webhook:
    wa = webhook()

    @wa.on_message()
    def first(message: Message) -> None:
        log.append("first")

    @wa.on_message("text", text="stop")
    def stopper(message: Message) -> None:
        log.append("stopper")
        raise StopPropagation

    @wa.on_message("text")
    async def third(message: Message) -> None:
        log.append("third")

    return wa


def test_registration_order() -> None:
    log: list[str] = []
    result = testing.run(ordered_webhook(log), testing.text("go"))
    assert log == ["first", "third"]
    assert [name.rsplit(".", 1)[-1] for name in result.names] == ["first", "third"]


def test_stop_propagation_stops_later_callbacks_of_that_event_only() -> None:
    log: list[str] = []
    testing.run(ordered_webhook(log), testing.text("stop") + testing.text("go"))
    assert log == ["first", "stopper", "first", "third"]


def test_stop_propagation_from_an_async_callback() -> None:
    wa = webhook()
    log: list[str] = []

    @wa.on_message()
    async def first(message: Message) -> None:
        log.append("first")
        raise StopPropagation

    @wa.on_message()
    def second(message: Message) -> None:
        log.append("second")

    result = testing.run(wa, testing.text())
    assert log == ["first"]
    assert len(result.calls) == 1 and result.calls[0].error is None


def test_stop_propagation_outside_a_dispatch_loop_is_a_quiet_success() -> None:
    """The retry path calls one callback alone: StopPropagation must not fail it, nor leak state."""
    wa = webhook()

    @wa.on_message()
    def stopper(message: Message) -> None:
        raise StopPropagation

    (event,) = testing.text().events()
    assert wa.registry.callbacks[0](event) is True  # the loop learns of the stop from this


def test_matching_is_a_list_in_registration_order() -> None:
    log: list[str] = []
    wa = ordered_webhook(log)
    (event,) = testing.text("stop").events()
    matching = wa.registry.matching(event)
    assert len(matching) == 3
    assert matching == wa.registry.callbacks
    assert [cb.name.rsplit(".", 1)[-1] for cb in matching] == ["first", "stopper", "third"]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    wa = webhook()

    @wa.on_message()
    def boom(message: Message) -> None:
        raise ValueError("boom")

    ran: list[Callable[..., Any]] = []

    @wa.on_message()
    def after(message: Message) -> None:
        ran.append(after)

    result = testing.run(wa, testing.text(), raise_errors=False)
    assert isinstance(result.calls_of(boom)[0].error, ValueError)
    assert ran == [after]
