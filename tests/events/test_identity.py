"""Idempotency keys and conversation keys (wa_middleware/events/identity.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import PAYLOADS
from wa_middleware import NoAuth, Webhook
from wa_middleware.errors import ConfigurationError
from wa_middleware.events.decode import decode_delivery
from wa_middleware.events.identity import conversation_key, event_key


def keys(name: str) -> list[tuple[str, str, str | None]]:
    events = decode_delivery((PAYLOADS / name).read_bytes())
    return [(e.kind, event_key(e), conversation_key(e)) for e in events]


@pytest.mark.parametrize(
    "name,expected",
    [
        pytest.param("text.json", [("message", "m:wamid.TEST1", "100000000000001:4915112345678")], id="message"),
        pytest.param(
            "status_failed.json", [("status", "s:wamid.OUT3:failed", "100000000000001:4915112345678")], id="status"
        ),
        pytest.param("bsuid_only.json", [("message", "m:wamid.TEST20", "100000000000001:US.1234567890")], id="bsuid"),
        pytest.param("onprem_text.json", [("message", "m:ABGGFlA5FpafAgo6EhRSc", ":16315551234")], id="on-premise"),
    ],
)
def test_keys(name: str, expected: list[tuple[str, str, str | None]]) -> None:
    assert keys(name) == expected


def test_one_message_two_statuses_are_two_events() -> None:
    statuses = [k for k in keys("multi.json") if k[0] == "status"]
    assert [k[1] for k in statuses] == ["s:wamid.OUT1:delivered", "s:wamid.OUT2:read"]


@pytest.mark.parametrize("name", ["value_error.json", "template_status.json", "unknown_type.json"])
def test_hash_keys_are_stable(name: str) -> None:
    first, second = keys(name), keys(name)
    assert first == second
    for kind, key, conversation in first:
        if kind in ("error", "change"):
            assert key.startswith("h:") and conversation is None


#: The hash keys of the fixtures' errors and changes, as they were before the context carried the
#: entry time and the contacts of statuses and errors: a redelivery across an upgrade is still a duplicate.
PINNED_HASH_KEYS = {
    "model/cloud_and_odd_parts.json": [
        "h:1a7f5299675ff8275f37837b8bb46c1d",
        "h:cd1e2d775a97ac00b6866eb39f78742c",
        "h:b10f2e848ed71c0fd177d5df1a02e1a9",
    ],
    "model/two_entries.json": [
        "h:8815da7157003c3cc67d5b7d04fdce04",
        "h:0e342f2437665737adf1cdc283afd086",
        "h:343e3c8199de2519139468e3c7cac9c0",
    ],
    "onprem_errors.json": ["h:f9f169881f66c45cdaa886d29e037fcd"],
    "template_status.json": ["h:862bdf88d72c6c1ab51e70c04a088eb5"],
    "value_error.json": ["h:94f9e7b9888e91785c89395d6e81e500"],
}


@pytest.mark.parametrize("name", sorted(PINNED_HASH_KEYS))
def test_hash_keys_are_pinned(name: str) -> None:
    assert [key for _, key, _ in keys(name) if key.startswith("h:")] == PINNED_HASH_KEYS[name]


def test_entry_time_is_not_part_of_a_key() -> None:
    """``entry[].time`` is on the context, not in the hashed data: a re-stamped redelivery is a duplicate."""
    body = json.loads((PAYLOADS / "model" / "two_entries.json").read_text())
    first = decode_delivery(json.dumps(body).encode())
    for entry in body["entry"]:
        entry["time"] = 1800000000
    second = decode_delivery(json.dumps(body).encode())
    assert {e.ctx.entry_time for e in second} == {1800000000} != {e.ctx.entry_time for e in first}
    assert [event_key(e) for e in first] == [event_key(e) for e in second]


def test_ordered_option() -> None:
    wa = Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:1/0", ordered=True)

    @wa.on_message("text", ordered=False)
    def a(message: object) -> None: ...

    @wa.on_status(ordered=True)
    def b(status: object) -> None: ...

    @wa.on_error
    def c(error: object) -> None: ...

    assert [cb.ordered for cb in wa.registry.callbacks] == [False, True, None]
    units = wa.dispatcher.units(decode_delivery((PAYLOADS / "multi.json").read_bytes()), "M")
    lanes = {(u.callback.name.rsplit(".", 1)[-1], u.event.kind): u.lane for u in units}
    assert lanes[("a", "message")] == ""  # explicitly unordered
    assert lanes[("b", "status")].endswith(":lane:100000000000001:4915112345678")
    assert [u.uid for u in units] == [f"M.{i}" for i in range(len(units))]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"dedupe_ttl": 0}, id="ttl"),
        pytest.param({"recovery_timeout": 0.5}, id="recovery-too-short"),
    ],
)
def test_invalid_worker_options(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:1/0", **kwargs)  # type: ignore[arg-type]


def test_ordered_must_be_bool() -> None:
    wa = Webhook(auth=NoAuth(), broker_url="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError):
        wa.on_message(ordered="yes")(lambda m: None)  # type: ignore[call-overload]
