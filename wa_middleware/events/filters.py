"""Callback filters: validated and compiled once, at decoration time.

Each keyword filter becomes one small predicate over an `Event`; a callback runs when every
predicate holds (filters combine with AND; the values given to one filter combine with OR).
A bad filter (an empty value, a regex that does not compile, a text filter on an image
callback) raises `ConfigurationError` where the decorator is applied, never per event.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any

from ..errors import ConfigurationError
from .decode import Event, EventKind
from .models import Change, Error, Message, Status

__all__ = ["Predicate", "StrFilter", "compile_filters", "wants_ctx"]

#: A compiled filter.
Predicate = Callable[[Event], bool]
#: One value, or any of several.
StrFilter = str | int | Iterable[str | int]

_TEXT_TYPES = frozenset({"text"})
_REPLY_TYPES = frozenset({"interactive", "button"})


def wants_ctx(fn: Callable[..., Any]) -> bool:
    """A callback (or ``when=`` predicate) takes the context when it accepts a second positional argument."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    if not positional:
        raise ConfigurationError(f"{fn!r} must accept the event as its first argument")
    return len(positional) >= 2


def _strings(option: str, value: StrFilter) -> frozenset[str]:
    items: Iterable[Any] = (value,) if isinstance(value, (str, int)) else value
    out: set[str] = set()
    try:
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (str, int)) or item == "":
                raise ConfigurationError(f"{option}= takes non-empty strings, not {item!r}")
            out.add(str(item))
    except TypeError:
        raise ConfigurationError(f"{option}= takes a string or a collection of strings, not {value!r}") from None
    if not out:
        raise ConfigurationError(f"{option}= needs at least one value")
    return frozenset(out)


def _codes(option: str, value: int | str | Iterable[int | str]) -> frozenset[int]:
    codes: set[int] = set()
    for item in _strings(option, value):
        try:
            codes.add(int(item))
        except ValueError:
            raise ConfigurationError(f"{option}= takes integer error codes, not {item!r}") from None
    return frozenset(codes)


def _regex(value: str | re.Pattern[str]) -> re.Pattern[str]:
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"text_regex= takes a non-empty pattern, not {value!r}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ConfigurationError(f"text_regex={value!r} does not compile: {exc}") from None


def _narrow(kind: str, values: frozenset[str] | None, implied: frozenset[str], option: str) -> frozenset[str]:
    """A content filter implies the message types it can match; given types must allow it."""
    if values is None:
        return implied
    if not values & implied:
        raise ConfigurationError(
            f"on_{kind}({', '.join(sorted(values))}) with {option}= never matches: {option}= applies to "
            f"{' and '.join(sorted(implied))} messages"
        )
    return values & implied


def compile_filters(
    kind: EventKind,
    values: Collection[str | int],
    *,
    phone_number_id: StrFilter | None = None,
    waba_id: StrFilter | None = None,
    sender: StrFilter | None = None,
    recipient: StrFilter | None = None,
    text: StrFilter | None = None,
    text_prefix: StrFilter | None = None,
    text_regex: str | re.Pattern[str] | None = None,
    reply_id: StrFilter | None = None,
    error_code: int | str | Iterable[int | str] | None = None,
    event: StrFilter | None = None,
    when: Callable[..., bool] | None = None,
) -> tuple[frozenset[str] | None, tuple[Predicate, ...]]:
    """Validate a decorator's filters and compile them.

    :param kind: the event kind the callback listens to.
    :param values: the positional filter: message types, status values, error codes or change fields.
    :returns: the accepted positional values (None for any) and the predicates, cheapest first.
    :raises ConfigurationError: on any filter that is invalid or can never match.
    """
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise ConfigurationError(f"invalid filter value {value!r} for on_{kind}()")
    if kind == "error":
        accepted: frozenset[str] | None = frozenset(str(c) for c in _codes("on_error", values)) if values else None
    else:
        accepted = frozenset(str(v) for v in values) or None
    predicates: list[Predicate] = []

    if phone_number_id is not None:
        ids = _strings("phone_number_id", phone_number_id)
        predicates.append(lambda e: e.ctx.metadata is not None and e.ctx.metadata.phone_number_id in ids)
    if waba_id is not None:
        wabas = _strings("waba_id", waba_id)
        predicates.append(lambda e: e.ctx.waba_id in wabas)
    if sender is not None:
        if kind != "message":
            raise ConfigurationError("sender= filters messages; use recipient= for statuses")
        senders = _strings("sender", sender)
        predicates.append(lambda e: _message(e).from_ in senders or _message(e).from_user_id in senders)
    if recipient is not None:
        if kind != "status":
            raise ConfigurationError("recipient= filters statuses; use sender= for messages")
        recipients = _strings("recipient", recipient)
        predicates.append(lambda e: _status(e).recipient_id in recipients or _status(e).recipient_user_id in recipients)
    if text is not None or text_prefix is not None or text_regex is not None:
        if kind != "message":
            raise ConfigurationError("text filters apply to on_message() only")
        accepted = _narrow(kind, accepted, _TEXT_TYPES, "text")
        if text is not None:
            texts = _strings("text", text)
            predicates.append(lambda e: _body(e) in texts)
        if text_prefix is not None:
            prefixes = tuple(_strings("text_prefix", text_prefix))
            predicates.append(lambda e: (body := _body(e)) is not None and body.startswith(prefixes))
        if text_regex is not None:
            search = _regex(text_regex).search
            predicates.append(lambda e: (body := _body(e)) is not None and search(body) is not None)
    if reply_id is not None:
        if kind != "message":
            raise ConfigurationError("reply_id= applies to on_message() only")
        accepted = _narrow(kind, accepted, _REPLY_TYPES, "reply_id")
        reply_ids = _strings("reply_id", reply_id)
        predicates.append(lambda e: _message(e).reply_id in reply_ids)
    if error_code is not None:
        if kind == "change":
            raise ConfigurationError("error_code= applies to messages, statuses and errors, not changes")
        codes = _codes("error_code", error_code)
        predicates.append(lambda e: not codes.isdisjoint(_error_codes(e)))
    if event is not None:
        if kind != "change":
            raise ConfigurationError("event= filters changes (value.event), e.g. on_change('account_update', ...)")
        events = _strings("event", event)
        predicates.append(lambda e: isinstance(v := _change(e).value, dict) and v.get("event") in events)
    if when is not None:
        if not callable(when):
            raise ConfigurationError(f"when= takes a callable, not {when!r}")
        if wants_ctx(when):
            predicates.append(lambda e: bool(when(e.data, e.ctx)))
        else:
            predicates.append(lambda e: bool(when(e.data)))
    return accepted, tuple(predicates)


# The casts below are free: a predicate only ever sees events of its callback's kind.


def _message(event: Event) -> Message:
    return event.data  # type: ignore[return-value]


def _status(event: Event) -> Status:
    return event.data  # type: ignore[return-value]


def _change(event: Event) -> Change:
    return event.data  # type: ignore[return-value]


def _body(event: Event) -> str | None:
    text = _message(event).text
    return text.body if text is not None else None


def _error_codes(event: Event) -> Iterable[int | None]:
    data = event.data
    if isinstance(data, Error):
        return (data.code,)
    errors = data.errors if isinstance(data, (Message, Status)) else None
    return [error.code for error in errors] if errors else ()
