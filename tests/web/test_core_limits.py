"""The sans-IO core's decisions, without any server: auth order, handshake, limits, deep JSON."""

from __future__ import annotations

import pytest

from wa_middleware import BasicAuth, Dialog360Signature, HeaderAuth, NoAuth, Webhook
from wa_middleware.errors import ConfigurationError, PayloadError, PayloadTooDeep, WebhookError
from wa_middleware.web.auth import AllOf
from wa_middleware.web.core import Core

BODY = b'{"object":"whatsapp_business_account","entry":[]}'
SIG = "271bff1dddcc039b87f299732cd62bea35d56a3c8cc88af006177c5f970d7e3e"  # key "partner-secret"


def core(auth: object = None, **kwargs: object) -> Core:
    params: dict[str, object] = {
        "path": "/webhook",
        "auth": auth or BasicAuth("u", "p"),
        "max_body_size": 1024,
        "queue_name": "q",
        "actor_name": "a",
        "enqueue_timeout": 1.0,
    }
    params.update(kwargs)
    return Core(**params)  # type: ignore[arg-type]


def status(response: object) -> int | None:
    return None if response is None else response.status  # type: ignore[attr-defined]


GOOD = {"authorization": BasicAuth.header_value("u", "p")}


@pytest.mark.parametrize(
    "method,headers,length,expected",
    [
        pytest.param("POST", GOOD, 10, None, id="read-the-body"),
        pytest.param("POST", GOOD, None, None, id="no-length"),
        pytest.param("POST", {}, 10, 401, id="no-auth"),
        pytest.param("POST", {}, 10**9, 401, id="auth-before-size"),
        pytest.param("POST", GOOD, 1025, 413, id="over-cap"),
        pytest.param("POST", GOOD, -1, 400, id="bad-length"),
        pytest.param("GET", GOOD, None, 405, id="get-without-verify-token"),
        pytest.param("PUT", GOOD, 10, 405, id="put"),
        pytest.param("HEAD", GOOD, None, 405, id="head"),
    ],
)
def test_start(method: str, headers: dict[str, str], length: int | None, expected: int | None) -> None:
    assert status(core().start(method, headers, length)) == expected


def test_signature_missing_is_refused_before_the_body() -> None:
    c = core(Dialog360Signature("partner-secret"))
    assert status(c.start("POST", {}, 10)) == 401
    assert status(c.start("POST", {"x-360dialog-signature": "nothex"}, 10)) == 401
    assert c.start("POST", {"x-360dialog-signature": SIG}, 10) is None
    assert c.finish({"x-360dialog-signature": SIG}, BODY).data
    with pytest.raises(WebhookError) as info:
        c.finish({"x-360dialog-signature": SIG}, BODY + b" ")
    assert info.value.status == 401


def test_basic_and_signature_together() -> None:
    c = core(AllOf(BasicAuth("u", "p"), Dialog360Signature("partner-secret")))
    headers = {**GOOD, "x-360dialog-signature": SIG}
    assert c.start("POST", headers, 10) is None
    assert c.finish(headers, BODY)
    assert status(c.start("POST", {"x-360dialog-signature": SIG}, 10)) == 401
    response = c.reject(c_error(c, {**GOOD, "x-360dialog-signature": "0" * 64}))
    assert response.status == 401 and dict(response.headers)["www-authenticate"].startswith("Basic")


def c_error(c: Core, headers: dict[str, str]) -> WebhookError:
    with pytest.raises(WebhookError) as info:
        c.finish(headers, BODY)
    return info.value


@pytest.mark.parametrize(
    "depth,expected",
    [
        pytest.param(50, None, id="50"),
        pytest.param(900, None, id="900"),
        pytest.param(1_000, PayloadTooDeep, id="1k"),
        pytest.param(10_000, PayloadTooDeep, id="10k"),
        pytest.param(100_000, PayloadTooDeep, id="100k"),
    ],
)
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deep_json_is_a_400_not_a_crash(depth: int, expected: type[Exception] | None, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    body = b'{"x":' + opener * depth + b"1" + closer * depth + b"}"
    c = core(NoAuth(), max_body_size=10**7)
    if expected is None:
        assert c.finish({}, body).data
    else:
        with pytest.raises(expected) as info:
            c.finish({}, body)
        assert isinstance(info.value, PayloadError)
        assert c.reject(info.value).status == 400


@pytest.mark.parametrize("body", [b"", b"[]", b"1", b'"x"', b"{", b"\xff\xfe{}", b"{}{}", b"null", b'{"a":1,}'])
def test_not_one_json_object(body: bytes) -> None:
    with pytest.raises(PayloadError):
        core(NoAuth()).finish({}, body)


# -- Meta's subscription handshake ---------------------------------------------------------


@pytest.mark.parametrize(
    "query,expected,body",
    [
        pytest.param(
            "hub.mode=subscribe&hub.verify_token=vt-123&hub.challenge=1158201444", 200, b"1158201444", id="ok"
        ),
        pytest.param("hub.challenge=42&hub.mode=subscribe&hub.verify_token=vt-123", 200, b"42", id="any-order"),
        pytest.param("hub.mode=subscribe&hub.verify_token=vt-12&hub.challenge=1", 403, None, id="wrong-token"),
        pytest.param("hub.mode=subscribe&hub.verify_token=vt-1234&hub.challenge=1", 403, None, id="longer-token"),
        pytest.param("hub.mode=unsubscribe&hub.verify_token=vt-123&hub.challenge=1", 403, None, id="wrong-mode"),
        pytest.param("hub.mode=subscribe&hub.verify_token=vt-123", 403, None, id="no-challenge"),
        pytest.param("hub.mode=subscribe&hub.verify_token=vt-123&hub.challenge=", 403, None, id="empty-challenge"),
        pytest.param("hub.mode=subscribe&hub.challenge=1", 403, None, id="no-token"),
        pytest.param("", 403, None, id="no-query"),
        pytest.param(
            "hub.mode=subscribe&hub.verify_token=x&hub.verify_token=vt-123&hub.challenge=1", 403, None, id="two-tokens"
        ),
        pytest.param(
            "hub.mode=subscribe&hub.verify_token=vt-123&hub.challenge=%3Cscript%3E%0A", 403, None, id="newline"
        ),
        pytest.param(
            "hub.mode=subscribe&hub.verify_token=vt-123&hub.challenge=" + "9" * 300, 403, None, id="long-challenge"
        ),
        pytest.param("&".join(f"k{i}=v" for i in range(100)), 403, None, id="many-fields"),
        pytest.param("hub.mode=subscribe&hub.verify_token=%FF%FE&hub.challenge=1", 403, None, id="binary-token"),
        pytest.param("%%%&&&===", 403, None, id="garbage"),
    ],
)
def test_handshake(query: str, expected: int, body: bytes | None) -> None:
    c = core(verify_token="vt-123")
    response = c.start("GET", {}, None, query)
    assert response is not None and response.status == expected
    if body is not None:
        assert response.body == body
        assert dict(response.headers)["content-type"].startswith("text/plain")


def test_allow_header_names_get_with_a_verify_token() -> None:
    response = core(verify_token="t").start("PUT", {}, None)
    assert response is not None and dict(response.headers)["allow"] == "GET, POST"


# -- Webhook configuration -----------------------------------------------------------------


def test_webhook_auth_list_means_all_of() -> None:
    wa = Webhook(auth=[BasicAuth("u", "p"), Dialog360Signature("s")], broker_url="redis://127.0.0.1:1/0")
    assert isinstance(wa.auth, AllOf)
    assert wa.core.auth is wa.auth


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="no-auth"),
        pytest.param({"auth": []}, id="empty-list"),
        pytest.param({"auth": [NoAuth()]}, id="noauth-in-list"),
        pytest.param({"auth": "secret"}, id="not-a-scheme"),
        pytest.param({"auth": NoAuth(), "body_timeout": 0}, id="body-timeout-0"),
        pytest.param({"auth": NoAuth(), "body_timeout": 600}, id="body-timeout-huge"),
        pytest.param({"auth": NoAuth(), "verify_token": ""}, id="empty-verify-token"),
    ],
)
def test_webhook_refuses_bad_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Webhook(broker_url="redis://127.0.0.1:1/0", **kwargs)  # type: ignore[arg-type]


def test_webhook_passes_limits_to_core() -> None:
    wa = Webhook(auth=HeaderAuth("X-T", "t"), body_timeout=3.5, verify_token="vt", broker_url="redis://x:1/0")
    assert wa.core.body_timeout == 3.5
    assert status(wa.core.start("GET", {}, None, "hub.mode=subscribe&hub.verify_token=vt&hub.challenge=7")) == 200


@pytest.mark.parametrize(
    "value,expected",
    [(None, None), ("", None), ("0", 0), ("42", 42), ("-1", -1), ("1e3", -1), (" 5", -1), ("²", -1), ("٣", -1)],
)
def test_parse_content_length(value: str | None, expected: int | None) -> None:
    from wa_middleware.web.core import parse_content_length

    assert parse_content_length(value) == expected
