"""Synthetic webhook deliveries shaped like the ones 360dialog forwards from the Cloud API.

The bodies are generated here rather than read from sample files, so a user can run the
benchmarks on their own machine with nothing but this package. The mix follows the sender's
sizing rule: three status deliveries for every incoming-message delivery; the sizes span
1-3 KB, with a few status deliveries carrying many statuses at once.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

#: The events' own times: within the last hour, as a live sender's are (the worker keeps the
#: once-per-event records of recent events as done-marks, of older ones as a hash each).
_NOW = int(time.time())

__all__ = ["AUTH_PASSWORD", "AUTH_USER", "Delivery", "auth_header", "make_deliveries", "signature_header"]

AUTH_USER = "bench"
AUTH_PASSWORD = "bench-secret"

_WORDS = (
    "hello order delivery tomorrow please confirm address thanks payment received invoice "
    "where is my package can you call me back later the price of the blue one"
).split()


def auth_header() -> str:
    """The ``Authorization`` value that the webhook's ``BasicAuth(AUTH_USER, AUTH_PASSWORD)`` accepts."""
    token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode("ascii")
    return f"Basic {token}"


def signature_header() -> str:
    """A well-formed ``X-Hub-Signature-256`` value. pywa's FastAPI route requires the header
    even when it does not validate it; we run pywa with ``validate_updates=False``."""
    return "sha256=" + "0" * 64


@dataclass(frozen=True)
class Delivery:
    """One body and the event ids it carries (used to count handled events after a crash)."""

    kind: str  # "message" or "status"
    body: bytes
    event_ids: tuple[str, ...]


def _wamid(rng: random.Random) -> str:
    raw = rng.randbytes(30)
    return "wamid." + base64.b64encode(raw).decode("ascii")


def _envelope(value: Mapping[str, object], rng: random.Random) -> bytes:
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": str(rng.randrange(10**15, 10**16)), "changes": [{"value": value, "field": "messages"}]}],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _metadata() -> dict[str, str]:
    return {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"}


def _contact(phone: str, rng: random.Random) -> dict[str, object]:
    name = " ".join(w.capitalize() for w in rng.sample(_WORDS, 2))
    return {"profile": {"name": name}, "wa_id": phone, "user_id": f"US.{rng.randrange(10**19, 10**20)}"}


def _message_delivery(rng: random.Random) -> Delivery:
    phone = str(rng.randrange(10**11, 10**12))
    wamid = _wamid(rng)
    # Real incoming texts vary a lot; 40-260 words puts the body between about 1 and 2.5 KB.
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(70, 280)))
    message = {
        "from": phone,
        "id": wamid,
        "timestamp": str(_NOW - rng.randrange(3600)),
        "text": {"body": text},
        "type": "text",
        "context": {"from": "15550001111", "id": _wamid(rng)},
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": _metadata(),
        "contacts": [_contact(phone, rng)],
        "messages": [message],
    }
    return Delivery("message", _envelope(value, rng), (wamid,))


def _status(rng: random.Random, status: str, phone: str) -> dict[str, object]:
    item: dict[str, object] = {
        "id": _wamid(rng),
        "status": status,
        "timestamp": str(_NOW - rng.randrange(3600)),
        "recipient_id": phone,
        "recipient_user_id": f"US.{rng.randrange(10**19, 10**20)}",
        "biz_opaque_callback_data": "campaign=" + rng.randbytes(24).hex(),
    }
    if status != "read":
        item["conversation"] = {
            "id": rng.randbytes(16).hex(),
            "expiration_timestamp": str(_NOW + 86400 + rng.randrange(3600)),
            "origin": {"type": rng.choice(["marketing", "utility", "service"])},
        }
        item["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "utility", "type": "regular"}
    return item


def _status_delivery(rng: random.Random, count: int) -> Delivery:
    phones = [str(rng.randrange(10**11, 10**12)) for _ in range(count)]
    statuses = [_status(rng, rng.choice(["sent", "delivered", "read"]), phone) for phone in phones]
    # Current Cloud API status deliveries name the recipients in "contacts" (pywa requires it).
    value = {
        "messaging_product": "whatsapp",
        "metadata": _metadata(),
        "contacts": [_contact(phone, rng) for phone in phones],
        "statuses": statuses,
    }
    return Delivery("status", _envelope(value, rng), tuple(str(s["id"]) for s in statuses))


def make_deliveries(count: int = 400, seed: int = 5) -> list[Delivery]:
    """``count`` deliveries in sending order: 1 message then 3 statuses, repeated.

    One status delivery in 25 carries 5 or 6 statuses (a sender batching a campaign's updates);
    the others two or three.
    """
    rng = random.Random(seed)
    out: list[Delivery] = []
    for i in range(count):
        if i % 4 == 0:
            out.append(_message_delivery(rng))
        else:
            many = rng.randrange(25) == 0
            out.append(_status_delivery(rng, rng.randrange(5, 7) if many else rng.randrange(2, 4)))
    return out
