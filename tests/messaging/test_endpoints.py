"""Endpoints and keys: URLs of each flavour, and no key or token in a repr, an error or a log line."""

from __future__ import annotations

import io
import logging
import traceback
from collections.abc import Iterator

import pytest

from wa_middleware import logs
from wa_middleware.messaging import ApiError, Client, Credentials, Dialog360, Meta, Retry, TransportError
from wa_middleware.messaging._wire import send_call
from wa_middleware.messaging.types import Text, message_request

from .conftest import KEY, NUMBER, TOKEN, USER
from .standin import Answer, StandIn, meta_error


def test_360dialog_urls() -> None:
    endpoint = Dialog360(KEY, "https://waba-sandbox.360dialog.io/")
    assert endpoint.messages_url() == "https://waba-sandbox.360dialog.io/messages"
    assert endpoint.media_url() == "https://waba-sandbox.360dialog.io/media"
    assert endpoint.media_item_url("123") == "https://waba-sandbox.360dialog.io/123"
    assert (
        endpoint.download_url("https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1&ext=2&hash=3")
        == "https://waba-sandbox.360dialog.io/whatsapp_business/attachments/?mid=1&ext=2&hash=3"
    )


def test_meta_urls() -> None:
    endpoint = Meta(TOKEN, NUMBER, version="v22.0")
    assert endpoint.messages_url() == f"https://graph.facebook.com/v22.0/{NUMBER}/messages"
    assert endpoint.media_url() == f"https://graph.facebook.com/v22.0/{NUMBER}/media"
    assert endpoint.media_item_url("9") == f"https://graph.facebook.com/v22.0/9?phone_number_id={NUMBER}"
    url = "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1"
    assert endpoint.download_url(url) == url


def test_a_key_for_a_number_keys_its_rate_limit_by_the_number() -> None:
    assert Credentials({NUMBER: KEY}).endpoint(NUMBER).limit_key == NUMBER
    anonymous = Dialog360(KEY).limit_key
    assert anonymous.startswith("key-") and KEY not in anonymous


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything logged anywhere (httpx and httpcore at DEBUG included), in the library's format."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.KeyValueFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore", "wa_middleware")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


def test_keys_never_appear_in_reprs_errors_or_logs(standin: StandIn, captured: io.StringIO) -> None:
    secrets = [KEY, TOKEN]
    seen: list[str] = []
    endpoints = [Dialog360(KEY, standin.url), Meta(TOKEN, NUMBER, base_url=standin.url)]
    for endpoint in endpoints:
        credentials = Credentials({NUMBER: endpoint})
        client = Client(credentials, retry=Retry(attempts=3, budget=5, backoff=0.01))
        call = send_call(endpoint, message_request(USER, Text(body="hi")), limit_key=None)
        seen += [repr(endpoint), str(endpoint), repr(credentials), repr(client), repr(call)]
        standin.script(
            Answer(429, {"error": {"message": "slow", "code": 130429}}, {"Retry-After": "0"}),
            Answer(500, "oops"),
            meta_error(190, "Invalid OAuth access token"),
            Answer(drop=True),
        )
        for _ in range(2):
            try:
                client.send_text(USER, "hi", phone_number_id=NUMBER)
            except (ApiError, TransportError) as exc:
                seen += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
        client.close()
    text = captured.getvalue()
    assert "api call retried" in text  # the retries were logged...
    assert "HTTP Request" in text  # ...and so was httpx, at DEBUG
    for secret in secrets:
        assert secret not in text
        for item in seen:
            assert secret not in item, item
    # The requests did carry them.
    assert {r.headers.get("d360-api-key") for r in standin.requests} >= {KEY}
    assert {r.headers.get("authorization") for r in standin.requests} >= {f"Bearer {TOKEN}"}
