"""Property tests: any JSON, and any mutation of a real delivery, decodes or raises PayloadError.

Nothing else may escape the decoder: the worker decodes every stored delivery, and an
exception there would dead-letter a delivery that WhatsApp was already told we accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PAYLOADS, SHARED_PAYLOADS
from wa_middleware import PayloadError, decode_delivery
from wa_middleware.events.decode import Event, _general_events

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)


def _real_payloads() -> list[Path]:
    files = sorted(PAYLOADS.glob("**/*.json"))
    if SHARED_PAYLOADS.is_dir():
        files += sorted(SHARED_PAYLOADS.glob("*.json"))
    return files


REAL = [msgspec.json.decode(p.read_bytes()) for p in _real_payloads()]


def check(body: bytes) -> None:
    try:
        events = decode_delivery(body)
    except PayloadError:
        return
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, Event)
        assert event.kind in ("message", "status", "error", "change")
        msgspec.to_builtins(event.data)  # every event can be encoded back


@SETTINGS
@given(json_values)
def test_any_json_value(value: Any) -> None:
    check(msgspec.json.encode(value))


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes(body: bytes) -> None:
    check(body)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc = msgspec.json.decode(msgspec.json.encode(draw(st.sampled_from(REAL))))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "wrap"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "wrap":
            parent[path[-1]] = [parent[path[-1]]]
        else:
            parent[path[-1]] = draw(json_values)
    return doc


@SETTINGS
@given(mutated())
def test_mutated_real_deliveries(doc: Any) -> None:
    body = msgspec.json.encode(doc)
    check(body)
    # The one-pass paths are shortcuts of the general one: same events, whatever the input.
    assert decode_delivery(body) == _general_events(body, None, None)


@SETTINGS
@given(st.sampled_from(REAL), st.integers(0, 10_000))
def test_truncated_real_deliveries(doc: Any, cut: int) -> None:
    body = msgspec.json.encode(doc)
    check(body[: cut % max(len(body), 1)])


@pytest.mark.parametrize("value", [float("inf"), 1e308, -(2**64), 2**64])
def test_extreme_numbers(value: float) -> None:
    body = b'{"messages": [{"type": "text", "timestamp": %s, "text": {"body": "x"}}]}' % str(value).encode()
    check(body.replace(b"inf", b"1e999"))
