"""A msgspec MessagePack encoder for dramatiq messages.

Faster than dramatiq's JSON encoder, and it carries ``bytes``: a delivery body travels as-is,
never re-encoded. It still reads JSON messages, so a worker that uses it can consume messages
sent by code that uses dramatiq's default encoder.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import msgspec
from dramatiq.encoder import Encoder
from dramatiq.errors import DecodeError

__all__ = ["MsgpackEncoder", "install"]


class MsgpackEncoder(Encoder):
    def __init__(self) -> None:
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode
        self._decode_json = msgspec.json.Decoder().decode

    def encode(self, data: dict[str, Any]) -> bytes:
        return self._encode(data)

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            # A JSON message always starts with "{"; a MessagePack map never does.
            result = self._decode_json(data) if data[:1] == b"{" else self._decode(data)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"failed to decode message {data[:64]!r}", data, exc) from None  # type: ignore[no-untyped-call]
        if not isinstance(result, dict):
            raise DecodeError(f"message is not a map: {data[:64]!r}", data, None)  # type: ignore[no-untyped-call]
        return result


def install() -> None:
    """Make this the process-wide dramatiq encoder (workers and the dev worker call it)."""
    if not isinstance(dramatiq.get_encoder(), MsgpackEncoder):
        dramatiq.set_encoder(MsgpackEncoder())
