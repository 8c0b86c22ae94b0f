"""The sans-IO core: every decision of the request path, as tables."""

from __future__ import annotations

import base64

import dramatiq
import msgspec
import pytest

from wa_middleware import BasicAuth, NoAuth, Webhook
from wa_middleware.errors import ConfigurationError, PayloadError, QueueUnavailable, WebhookError
from wa_middleware.web.core import Core
from wa_middleware.worker.encoder import MsgpackEncoder


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def core() -> Core:
    return Core(
        path="/webhook",
        auth=BasicAuth("testuser", "testpass"),
        max_body_size=100,
        queue_name="q",
        actor_name="wa.dispatch",
        enqueue_timeout=2.0,
    )


@pytest.mark.parametrize(
    "method,headers,length,expected",
    [
        pytest.param("POST", basic("testuser", "testpass"), 10, None, id="ok"),
        pytest.param("POST", basic("testuser", "testpass"), None, None, id="ok-no-length"),
        pytest.param("POST", basic("testuser", "testpass"), 100, None, id="ok-at-cap"),
        pytest.param("POST", basic("testuser", "testpass"), 101, 413, id="over-cap"),
        pytest.param("POST", basic("testuser", "testpass"), -1, 400, id="bad-length"),
        pytest.param("POST", {}, 10, 401, id="no-auth"),
        pytest.param("POST", basic("testuser", "wrong"), 10, 401, id="wrong-password"),
        pytest.param("POST", basic("other", "testpass"), 10, 401, id="wrong-user"),
        pytest.param("POST", {"authorization": "Basic"}, 10, 401, id="basic-no-token"),
        pytest.param("POST", {"authorization": "Basic !!!"}, 10, 401, id="basic-not-base64"),
        pytest.param("POST", {"authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}, 10, 401, id="bin"),
        pytest.param("POST", {"authorization": "Bearer dGVzdHVzZXI6dGVzdHBhc3M="}, 10, 401, id="other-scheme"),
        pytest.param("POST", {"authorization": "basic dGVzdHVzZXI6dGVzdHBhc3M="}, 10, None, id="scheme-any-case"),
        pytest.param("POST", {"authorization": "x" * 10000}, 10, 401, id="huge-header"),
        pytest.param("GET", basic("testuser", "testpass"), None, 405, id="get"),
        pytest.param("PUT", basic("testuser", "testpass"), 10, 405, id="put"),
        pytest.param("GET", {}, None, 405, id="method-before-auth"),
        pytest.param("POST", {}, 10**9, 401, id="auth-before-size"),
    ],
)
def test_start(core: Core, method: str, headers: dict[str, str], length: int | None, expected: int | None) -> None:
    response = core.start(method, headers, length)
    assert (response.status if response else None) == expected
    if expected == 401:
        assert response is not None and dict(response.headers)["www-authenticate"].startswith("Basic realm=")
    if expected == 405:
        assert response is not None and dict(response.headers)["allow"] == "POST"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"hello", id="text"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b'"string"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b'{"a": 1', id="truncated"),
        pytest.param(b'{"a": 1} trailing', id="trailing"),
        pytest.param(b"\xff\xfe{}", id="binary"),
    ],
)
def test_finish_rejects_what_is_not_a_json_object(core: Core, body: bytes) -> None:
    with pytest.raises(PayloadError):
        core.finish(basic("testuser", "testpass"), body)
    assert core.reject(PayloadError()).status == 400


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b'{"object": "whatsapp_business_account", "entry": []}', id="envelope"),
        pytest.param(b'{"unknown": {"deep": [1, 2, {"x": null}]}}', id="unknown-fields"),
        pytest.param(b'  {"statuses": []}\n', id="whitespace"),
    ],
)
def test_finish_builds_a_stock_dramatiq_message(core: Core, body: bytes) -> None:
    job = core.finish(basic("testuser", "testpass"), body)
    message = dramatiq.Message(**MsgpackEncoder().decode(job.data))
    assert message.queue_name == "q"
    assert message.actor_name == "wa.dispatch"
    assert message.message_id == job.message_id == message.options["redis_message_id"]
    delivered, received_at, delivery_id = message.args
    assert delivered == body  # the body travels as bytes, untouched
    assert received_at == message.message_timestamp
    assert delivery_id == job.message_id
    assert core.finish(basic("testuser", "testpass"), body).message_id != job.message_id


@pytest.mark.parametrize(
    "error,status",
    [
        pytest.param(QueueUnavailable("down"), 503, id="queue"),
        pytest.param(PayloadError(), 400, id="payload"),
        pytest.param(WebhookError(), 503, id="base-class-is-retryable"),
    ],
)
def test_reject_maps_each_error_to_one_status(core: Core, error: WebhookError, status: int) -> None:
    response = core.reject(error)
    assert response.status == status
    body = msgspec.json.decode(response.body)
    assert "error" in body
    if status == 503:
        assert dict(response.headers)["retry-after"] == "5"


def test_unexpected_errors_never_become_200_or_500(core: Core) -> None:
    response = core.internal_error(RuntimeError("bug"))
    assert response.status == 503
    assert b"bug" not in response.body and b"Traceback" not in response.body


def test_no_secret_in_rejection_logs(core: Core, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    core.start("POST", basic("testuser", "s3cr3t-value"), 10)
    with pytest.raises(PayloadError):
        core.finish({}, b"private message body")
    core.reject(PayloadError())
    assert "s3cr3t" not in caplog.text and "private message body" not in caplog.text
    assert "status=401" in caplog.text and "status=400" in caplog.text


def test_basic_auth_accepts_rotated_credentials() -> None:
    auth = BasicAuth("user", "new", also=[("user", "old")])
    assert auth.verify(basic("user", "new"), None)
    assert auth.verify(basic("user", "old"), None)
    assert not auth.verify(basic("user", "older"), None)
    assert BasicAuth.header_value("user", "new") == basic("user", "new")["authorization"]
    assert "new" not in repr(auth)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="no-auth"),
        pytest.param({"auth": "user:pass"}, id="auth-not-a-scheme"),
        pytest.param({"auth": NoAuth(), "path": "webhook"}, id="relative-path"),
        pytest.param({"auth": NoAuth(), "max_body_size": 0}, id="no-body"),
        pytest.param({"auth": NoAuth(), "enqueue_timeout": 6}, id="timeout-beyond-sender"),
        pytest.param({"auth": NoAuth(), "max_retries": -1}, id="negative-retries"),
    ],
)
def test_webhook_refuses_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Webhook(broker_url="redis://127.0.0.1:1/0", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "user,password",
    [pytest.param("", "x", id="empty-user"), pytest.param("a:b", "x", id="colon"), pytest.param("u", "", id="empty")],
)
def test_basic_auth_refuses_bad_credentials(user: str, password: str) -> None:
    with pytest.raises(ValueError):
        BasicAuth(user, password)


@pytest.mark.parametrize(
    ("number", "accepted"),
    [
        pytest.param(b"1e999", False, id="exponent-past-double"),
        pytest.param(b"-2E+400", False, id="negative-upper-exponent"),
        pytest.param(b"1e308", True, id="largest-decade"),
        pytest.param(b"1e-999", True, id="tiny-is-zero"),
        pytest.param(b"123456789012345678901234567890", True, id="big-integer"),
        pytest.param(b'"1e999"', True, id="in-a-string"),
        # Past a double with a two-digit exponent: 10^250 x 10^60.
        pytest.param(b"1" + b"0" * 250 + b"e60", False, id="long-mantissa-short-exponent"),
        pytest.param(b"9" * 5000, False, id="integer-past-msgspec"),
        # Bytes that are no UTF-8 inside a string: skipped by a structure-only check, refused by the worker.
        pytest.param(b'"\xff\xfe"', False, id="invalid-utf8-in-a-string"),
        pytest.param(b'"\xed\xa0\x80"', False, id="utf8-encoded-surrogate"),
        pytest.param('"caf\u00e9 \U0001f600"'.encode(), True, id="valid-utf8"),
    ],
)
def test_one_validity_rule_with_the_worker(number: bytes, accepted: bool) -> None:
    """What the request path stores, the worker can decode: a number msgspec cannot hold is a 400."""
    from wa_middleware import PayloadError, decode_delivery, testing

    body = testing.text("hi").to_bytes().replace(b'"timestamp":"', b'"x":' + number + b',"timestamp":"', 1)
    core = Core(path="/webhook", auth=NoAuth(), max_body_size=1 << 20, queue_name="q", actor_name="a",
                enqueue_timeout=1, body_timeout=1)  # fmt: skip
    if accepted:
        core.finish({}, body)
        decode_delivery(body)  # and the worker decodes it
    else:
        with pytest.raises(PayloadError):
            core.finish({}, body)


def test_a_timestamp_past_a_double_is_refused_not_stored() -> None:
    """The case the worker could not plan: ``"timestamp": 1e999`` in a message."""
    from wa_middleware import PayloadError, testing

    body = testing.text("hi").to_bytes()
    start = body.index(b'"timestamp":"') + len(b'"timestamp":')
    end = body.index(b'"', start + 1) + 1
    body = body[:start] + b"1e999" + body[end:]
    core = Core(path="/webhook", auth=NoAuth(), max_body_size=1 << 20, queue_name="q", actor_name="a",
                enqueue_timeout=1, body_timeout=1)  # fmt: skip
    with pytest.raises(PayloadError):
        core.finish({}, body)


def test_auth_as_a_user_password_tuple_is_basic_auth() -> None:
    wa = Webhook(auth=("user", "pass"), broker_url="redis://127.0.0.1:1/0")
    assert isinstance(wa.auth, BasicAuth)
    assert wa.auth.verify({"authorization": "Basic " + base64.b64encode(b"user:pass").decode()}, b"")


def test_message_ids_are_uuid4_strings_as_dramatiq_makes_them(core: Core) -> None:
    import uuid

    ids = {core.finish(basic("testuser", "testpass"), b"{}").message_id for _ in range(2000)}
    assert len(ids) == 2000
    for message_id in ids:
        parsed = uuid.UUID(message_id)
        assert str(parsed) == message_id and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_each_answer_carries_its_wsgi_form(core: Core) -> None:
    """Computed once per response (they are constants), without the hop-by-hop header PEP 3333 forbids."""
    from wa_middleware.errors import PayloadTooLarge

    ok = core.accepted(core.finish(basic("testuser", "testpass"), b"{}"))
    assert ok.wsgi_status == "200 OK" and ok.wsgi_headers == ok.headers
    too_large = core.reject(PayloadTooLarge())
    assert ("connection", "close") in too_large.headers
    assert too_large.wsgi_status == "413 Content Too Large"
    assert too_large.wsgi_headers == tuple(h for h in too_large.headers if h[0] != "connection")
