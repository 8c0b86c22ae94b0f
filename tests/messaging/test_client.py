"""The client against a local stand-in API: URLs and headers of both flavours, every send helper,
retries and their budget, typed errors, media through 360dialog's host, keys per number."""

from __future__ import annotations

import hashlib
import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wa_middleware.errors import ConfigurationError
from wa_middleware.messaging import (
    ApiError,
    AsyncClient,
    Client,
    ContactCard,
    ContactName,
    Credentials,
    Dialog360,
    ListRow,
    ListSection,
    MediaInfo,
    Meta,
    Parameter,
    Retry,
    TransportError,
    UnknownNumber,
    is_retryable,
)
from wa_middleware.messaging.types import Component

from .conftest import KEY, NUMBER, TOKEN, USER
from .standin import MEDIA_BYTES, META_MEDIA_URL, Answer, StandIn, meta_error

FAST = Retry(attempts=4, budget=5.0, backoff=0.01, max_backoff=0.05)


@pytest.fixture
def client(standin: StandIn) -> Iterator[Client]:
    with Client(Dialog360(KEY, standin.url), retry=FAST, timeout=2.0) as c:
        yield c


# -- the two flavours ------------------------------------------------------------------------


def test_360dialog_sends_to_messages_with_its_key(standin: StandIn, client: Client) -> None:
    result = client.send_text(USER, "Hello")
    (request,) = standin.requests
    assert (request.method, request.path) == ("POST", "/messages")
    assert request.headers["d360-api-key"] == KEY
    assert "authorization" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER,
        "type": "text",
        "text": {"body": "Hello"},
    }
    assert result.message_id == "wamid.STANDIN1" and result.wa_id == USER and not result.replayed


def test_meta_sends_to_the_numbers_path_with_a_bearer_token(standin: StandIn) -> None:
    with Client(Meta(TOKEN, NUMBER, base_url=standin.url), retry=FAST) as client:
        client.send_text(USER, "Hello", reply_to="wamid.IN")
    (request,) = standin.requests
    assert request.path == f"/v21.0/{NUMBER}/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert "d360-api-key" not in request.headers
    assert request.json["context"] == {"message_id": "wamid.IN"}


def test_the_meta_version_is_configurable(standin: StandIn) -> None:
    with Client(Meta(TOKEN, NUMBER, version="v23.0", base_url=standin.url), retry=FAST) as client:
        client.mark_read("wamid.IN")
    assert standin.requests[0].path == f"/v23.0/{NUMBER}/messages"


def test_mark_read_and_the_typing_indicator(standin: StandIn, client: Client) -> None:
    client.mark_read("wamid.IN")
    client.mark_read("wamid.IN", typing=True)
    plain, typing = (r.json for r in standin.requests)
    assert plain == {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN"}
    assert typing == {**plain, "typing_indicator": {"type": "text"}}


SENDS: list[Any] = [
    pytest.param(
        lambda c: c.send_template(
            USER, "hello", "en_US", [Component(type="body", parameters=[Parameter(type="text", text="Ana")])]
        ),
        {
            "type": "template",
            "template": {
                "name": "hello",
                "language": {"code": "en_US"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}],
            },
        },
        id="template",
    ),
    pytest.param(
        lambda c: c.send_image(USER, media_id="99", caption="c"),
        {"type": "image", "image": {"id": "99", "caption": "c"}},
        id="image",
    ),
    pytest.param(
        lambda c: c.send_video(USER, link="https://example.com/v.mp4"),
        {"type": "video", "video": {"link": "https://example.com/v.mp4"}},
        id="video",
    ),
    pytest.param(lambda c: c.send_audio(USER, media_id="5"), {"type": "audio", "audio": {"id": "5"}}, id="audio"),
    pytest.param(
        lambda c: c.send_document(USER, link="https://example.com/r.pdf", filename="r.pdf"),
        {"type": "document", "document": {"link": "https://example.com/r.pdf", "filename": "r.pdf"}},
        id="document",
    ),
    pytest.param(
        lambda c: c.send_sticker(USER, media_id="8"), {"type": "sticker", "sticker": {"id": "8"}}, id="sticker"
    ),
    pytest.param(
        lambda c: c.send_interactive_buttons(USER, "Confirm?", [("yes", "Yes"), ("no", "No")], footer="f"),
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "Confirm?"},
                "footer": {"text": "f"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                        {"type": "reply", "reply": {"id": "no", "title": "No"}},
                    ]
                },
            },
        },
        id="buttons",
    ),
    pytest.param(
        lambda c: c.send_interactive_list(
            USER, "Pick", "Menu", [ListSection(title="S", rows=[ListRow(id="a", title="A")])], header="H"
        ),
        {
            "type": "interactive",
            "interactive": {
                "type": "list",
                "header": {"type": "text", "text": "H"},
                "body": {"text": "Pick"},
                "action": {"button": "Menu", "sections": [{"title": "S", "rows": [{"id": "a", "title": "A"}]}]},
            },
        },
        id="list",
    ),
    pytest.param(
        lambda c: c.send_interactive_cta_url(USER, "Visit", "Open", "https://example.com"),
        {
            "type": "interactive",
            "interactive": {
                "type": "cta_url",
                "body": {"text": "Visit"},
                "action": {"name": "cta_url", "parameters": {"display_text": "Open", "url": "https://example.com"}},
            },
        },
        id="cta-url",
    ),
    pytest.param(
        lambda c: c.send_interactive_flow(
            USER, "Book", flow_cta="Book", flow_name="booking", flow_token="t", screen="START", data={"n": 1}
        ),
        {
            "type": "interactive",
            "interactive": {
                "type": "flow",
                "body": {"text": "Book"},
                "action": {
                    "name": "flow",
                    "parameters": {
                        "flow_message_version": "3",
                        "flow_cta": "Book",
                        "flow_name": "booking",
                        "flow_token": "t",
                        "flow_action": "navigate",
                        "flow_action_payload": {"screen": "START", "data": {"n": 1}},
                    },
                },
            },
        },
        id="flow",
    ),
    pytest.param(
        lambda c: c.send_location(USER, 1.5, -2.25, name="N"),
        {"type": "location", "location": {"latitude": 1.5, "longitude": -2.25, "name": "N"}},
        id="location",
    ),
    pytest.param(
        lambda c: c.send_contacts(USER, [ContactCard(name=ContactName(formatted_name="Ana"))]),
        {"type": "contacts", "contacts": [{"name": {"formatted_name": "Ana"}}]},
        id="contacts",
    ),
    pytest.param(
        lambda c: c.send_reaction(USER, "wamid.IN", "\N{HEAVY BLACK HEART}"),
        {"type": "reaction", "reaction": {"message_id": "wamid.IN", "emoji": "\N{HEAVY BLACK HEART}"}},
        id="reaction",
    ),
]


@pytest.mark.parametrize(("call", "expected"), SENDS)
def test_each_send_helper_posts_metas_body(
    standin: StandIn, client: Client, call: Callable[[Client], Any], expected: dict[str, Any]
) -> None:
    call(client)
    (request,) = standin.requests
    assert request.json == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": USER, **expected}


def test_a_flow_needs_exactly_one_of_id_and_name(client: Client) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        client.send_interactive_flow(USER, "x", flow_cta="Go")


# -- retries -------------------------------------------------------------------------------


def test_429_waits_as_long_as_retry_after_says(standin: StandIn, client: Client) -> None:
    standin.script(Answer(429, {"error": {"message": "slow down", "code": 130429}}, {"Retry-After": "1"}))
    started = time.monotonic()
    result = client.send_text(USER, "x")
    waited = standin.requests[1].at - standin.requests[0].at
    assert len(standin.requests) == 2 and result.message_id
    assert 0.9 <= waited < 2.5
    assert time.monotonic() - started < 3


def test_5xx_is_retried_with_backoff(standin: StandIn, client: Client) -> None:
    standin.script(Answer(500, {"error": {"message": "oops", "code": 1}}), Answer(503, "unavailable"))
    assert client.send_text(USER, "x").message_id == "wamid.STANDIN1"
    assert len(standin.requests) == 3


def test_a_throttling_code_under_400_is_retried(standin: StandIn, client: Client) -> None:
    standin.script(meta_error(131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit"))
    client.send_text(USER, "x")
    assert len(standin.requests) == 2


def test_retries_stop_at_the_attempt_limit(standin: StandIn, client: Client) -> None:
    standin.handler = lambda request: Answer(502, "bad gateway")
    with pytest.raises(ApiError) as caught:
        client.send_text(USER, "x")
    assert len(standin.requests) == FAST.attempts
    assert caught.value.status == 502 and caught.value.retryable and is_retryable(caught.value)


def test_the_budget_bounds_the_whole_call(standin: StandIn) -> None:
    standin.handler = lambda request: Answer(503, {"error": {"message": "down", "code": 2}})
    retry = Retry(attempts=100, budget=1.0, backoff=0.1, max_backoff=0.2)
    started = time.monotonic()
    with Client(Dialog360(KEY, standin.url), retry=retry) as client, pytest.raises(ApiError) as caught:
        client.send_text(USER, "x")
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed
    assert 3 <= len(standin.requests) < 100
    assert caught.value.retryable  # the worker may still retry the callback later


def test_a_retry_after_past_the_budget_is_not_waited_for(standin: StandIn, client: Client) -> None:
    standin.script(Answer(429, {"error": {"message": "later", "code": 80007}}, {"Retry-After": "60"}))
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        client.send_text(USER, "x")
    assert time.monotonic() - started < 1
    assert len(standin.requests) == 1
    assert caught.value.retry_after == 60 and caught.value.retryable


def test_a_slow_answer_is_cut_by_the_budget(standin: StandIn) -> None:
    standin.handler = lambda request: Answer(delay=3)
    started = time.monotonic()
    with Client(Dialog360(KEY, standin.url), retry=Retry(budget=0.5), timeout=10) as client:
        with pytest.raises(TransportError) as caught:
            client.send_text(USER, "x")
    assert time.monotonic() - started < 1.5
    assert caught.value.maybe_sent and caught.value.retryable


def test_a_send_that_may_have_gone_out_is_not_resent(standin: StandIn, client: Client) -> None:
    standin.script(Answer(drop=True))
    with pytest.raises(TransportError) as caught:
        client.send_text(USER, "x")
    assert caught.value.maybe_sent
    assert len(standin.requests) == 1


def test_a_mark_read_that_broke_is_retried(standin: StandIn, client: Client) -> None:
    standin.script(Answer(drop=True))
    client.mark_read("wamid.IN")
    assert len(standin.requests) == 2


def test_a_refused_connection_is_retried_and_then_raised() -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with Client(Dialog360(KEY, url), retry=FAST) as client, pytest.raises(TransportError) as caught:
        client.send_text(USER, "x")
    assert not caught.value.maybe_sent and caught.value.retryable
    assert KEY not in str(caught.value)


# -- typed errors --------------------------------------------------------------------------


def test_a_4xx_raises_a_typed_error_at_once(standin: StandIn, client: Client) -> None:
    standin.script(
        meta_error(
            131047,
            "Re-engagement message",
            details="Message failed to send because more than 24 hours have passed since the customer last replied",
        )
    )
    with pytest.raises(ApiError) as caught:
        client.send_text(USER, "x")
    error = caught.value
    assert len(standin.requests) == 1
    assert (error.status, error.code, error.message) == (400, 131047, "Re-engagement message")
    assert error.details is not None and "24 hours" in error.details
    assert error.fbtrace_id == "AbC"
    assert error.retryable is False and not is_retryable(error)
    assert "HTTP 400, code 131047: Re-engagement message" in str(error)


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        pytest.param(Answer(401, {"error": "Invalid api key"}), None, "Invalid api key", id="360dialog-error-string"),
        pytest.param(
            Answer(400, {"meta": {"success": False, "http_code": 400, "developer_message": "Bad", "details": ["x"]}}),
            None,
            "Bad",
            id="360dialog-legacy-meta",
        ),
        pytest.param(
            Answer(400, {"errors": [{"code": 1008, "title": "Required parameter is missing", "details": "to"}]}),
            1008,
            "Required parameter is missing",
            id="360dialog-errors-list",
        ),
        pytest.param(Answer(403, b"<html>Forbidden</html>"), None, "<html>Forbidden</html>", id="raw-body"),
    ],
)
def test_other_error_shapes_are_read(
    standin: StandIn, client: Client, answer: Answer, code: int | None, message: str
) -> None:
    standin.script(answer)
    with pytest.raises(ApiError) as caught:
        client.send_text(USER, "x")
    assert (caught.value.status, caught.value.code, caught.value.message) == (answer.status, code, message)
    assert not caught.value.retryable


def test_an_unexpected_success_body_is_an_error_not_a_retry(standin: StandIn, client: Client) -> None:
    standin.script(Answer(200, {"ok": True}))
    with pytest.raises(ApiError, match="unexpected answer") as caught:
        client.send_text(USER, "x")
    assert not caught.value.retryable and len(standin.requests) == 1


def test_errors_survive_pickling() -> None:
    error = ApiError(400, 131026, "Undeliverable", "details", subcode=5, retry_after=1.0, phone_number_id=NUMBER)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.status, copy.code, copy.details, copy.retryable, str(copy)) == (
        400,
        131026,
        "details",
        False,
        str(error),
    )
    transport = pickle.loads(pickle.dumps(TransportError("gone", maybe_sent=True)))
    assert transport.maybe_sent and str(transport) == "gone"


# -- media ---------------------------------------------------------------------------------


def test_upload_is_multipart_with_the_product(standin: StandIn, client: Client) -> None:
    media_id = client.upload_media(b"PNGDATA", "image/png", filename="a.png")
    (request,) = standin.requests
    assert media_id == "1037543291543636"
    assert (request.method, request.path) == ("POST", "/media")
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert b'name="messaging_product"\r\n\r\nwhatsapp' in request.body
    assert b'filename="a.png"' in request.body and b"Content-Type: image/png" in request.body
    assert b"PNGDATA" in request.body


def test_get_media_returns_metas_url_and_facts(standin: StandIn, client: Client) -> None:
    info = client.get_media("1037543291543636")
    assert standin.requests[0].path == "/1037543291543636"
    assert info.url == META_MEDIA_URL and info.mime_type == "image/png"
    assert info.file_size == len(MEDIA_BYTES)  # sent as a string of digits


def test_download_through_360dialog_fetches_metas_path_on_its_host(standin: StandIn, client: Client) -> None:
    content = client.download_media("1037543291543636")
    _, download = standin.requests
    assert content == MEDIA_BYTES
    assert (download.method, download.route) == ("GET", "/whatsapp_business/attachments/")
    assert download.query == {"mid": ["1234"], "ext": ["1700000000"], "hash": ["ATu_h"]}
    assert download.headers["d360-api-key"] == KEY


def test_a_405_download_falls_back_to_post_and_remembers(standin: StandIn, client: Client) -> None:
    def only_post(request: Any) -> Answer | None:
        if request.route.startswith("/whatsapp_business") and request.method == "GET":
            return Answer(405, {"error": "Method not allowed"})
        return None

    standin.handler = only_post
    info = client.get_media("1")
    assert client.download_media(info) == MEDIA_BYTES
    assert client.download_media(info) == MEDIA_BYTES
    methods = [r.method for r in standin.requests if r.route.startswith("/whatsapp_business")]
    assert methods == ["GET", "POST", "POST"]


def test_a_corrupted_download_is_refused(standin: StandIn, client: Client) -> None:
    info = MediaInfo(id="1", url=META_MEDIA_URL, sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(TransportError, match="corrupted"):
        client.download_media(info)


def test_meta_downloads_its_url_with_the_token_and_only_from_meta(standin: StandIn) -> None:
    with Client(Meta(TOKEN, NUMBER, base_url=standin.url), retry=FAST) as client:
        assert client.get_media("77").id == "77"
        assert standin.requests[0].path == f"/v21.0/77?phone_number_id={NUMBER}"
        own = MediaInfo(id="77", url=f"{standin.url}/whatsapp_business/attachments/?mid=1")
        assert client.download_media(own) == MEDIA_BYTES
        assert standin.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
        with pytest.raises(ValueError, match="not a Meta media host"):
            client.download_media(MediaInfo(id="77", url="https://evil.example/whatsapp_business/attachments/"))


def test_media_calls_are_retried_less(standin: StandIn, client: Client) -> None:
    # 360dialog blocks a number's media look-ups for an hour after five failed media requests.
    standin.handler = lambda request: Answer(500, "oops")
    with pytest.raises(ApiError):
        client.get_media("1")
    assert len(standin.requests) == FAST.media_attempts


def test_delete_media(standin: StandIn, client: Client) -> None:
    client.delete_media("55")
    assert (standin.requests[0].method, standin.requests[0].path) == ("DELETE", "/55")


def test_ids_cannot_add_path_segments(standin: StandIn, client: Client) -> None:
    client.get_media("../messages?x=1")
    assert standin.requests[0].path == "/..%2Fmessages%3Fx%3D1"


# -- keys per number -----------------------------------------------------------------------


def test_a_mapping_picks_each_numbers_key(standin: StandIn) -> None:
    keys = {"111": "key-one", "222": Dialog360("key-two", standin.url)}
    with Client(Credentials(keys, base_url=standin.url), retry=FAST) as client:
        client.send_text(USER, "a", phone_number_id="111")
        client.send_text(USER, "b", phone_number_id="222")
        with pytest.raises(UnknownNumber) as caught:
            client.send_text(USER, "c", phone_number_id="333")
    assert [r.headers["d360-api-key"] for r in standin.requests] == ["key-one", "key-two"]
    assert caught.value.retryable is False


def test_a_callable_is_asked_each_time(standin: StandIn) -> None:
    asked: list[str] = []

    def lookup(number: str) -> Dialog360 | None:
        asked.append(number)
        return Dialog360(f"key-{number}", standin.url) if number != "0" else None

    with Client(lookup, retry=FAST) as client:
        client.send_text(USER, "a", phone_number_id="111")
        client.mark_read("wamid.X", phone_number_id="222")
        with pytest.raises(UnknownNumber):
            client.send_text(USER, "b", phone_number_id="0")
    assert asked == ["111", "222", "0"]
    assert [r.headers["d360-api-key"] for r in standin.requests] == ["key-111", "key-222"]


def test_meta_endpoints_per_number(standin: StandIn) -> None:
    keys = {"111": Meta(TOKEN, "111", base_url=standin.url)}
    with Client(keys, retry=FAST) as client:
        client.send_text(USER, "a", phone_number_id="111")
    assert standin.requests[0].path == "/v21.0/111/messages"
    with pytest.raises(ConfigurationError, match="another number"):
        Credentials({"222": Meta(TOKEN, "111")})
    with pytest.raises(UnknownNumber):
        Credentials(Meta(TOKEN, "111")).endpoint("222")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: Dialog360(""), id="empty-key"),
        pytest.param(lambda: Dialog360("a\r\nX-Evil: 1"), id="header-injection"),
        pytest.param(lambda: Dialog360("k", "ftp://x"), id="bad-url"),
        pytest.param(lambda: Meta(TOKEN, ""), id="meta-without-number"),
        pytest.param(lambda: Credentials({"1": 5}), id="bad-value"),  # type: ignore[dict-item]
        pytest.param(lambda: Credentials(5), id="bad-source"),  # type: ignore[arg-type]
    ],
)
def test_configuration_fails_loudly(bad: Callable[[], Any]) -> None:
    with pytest.raises(ConfigurationError):
        bad()


# -- async ---------------------------------------------------------------------------------


async def test_the_async_client_sends_retries_and_downloads(standin: StandIn) -> None:
    standin.script(Answer(503, "busy"))
    async with AsyncClient(Dialog360(KEY, standin.url), retry=FAST) as client:
        result = await client.send_text(USER, "Hello")
        await client.mark_read("wamid.IN", typing=True)
        content = await client.download_media("9")
        media_id = await client.upload_media(b"x", "text/plain")
    assert result.message_id == "wamid.STANDIN1"
    assert content == MEDIA_BYTES and media_id
    assert [r.route for r in standin.requests] == [
        "/messages",
        "/messages",
        "/messages",
        "/9",
        "/whatsapp_business/attachments/",
        "/media",
    ]


async def test_the_async_client_raises_typed_errors(standin: StandIn) -> None:
    standin.script(meta_error(100, "Invalid parameter"))
    async with AsyncClient(Dialog360(KEY, standin.url), retry=FAST) as client:
        with pytest.raises(ApiError) as caught:
            await client.send_image(USER, link="https://example.com/a.png")
    assert caught.value.code == 100 and not caught.value.retryable
