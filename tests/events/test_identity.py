"""Idempotency keys and conversation keys (wa_middleware/events/identity.py)."""

from __future__ import annotations

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
