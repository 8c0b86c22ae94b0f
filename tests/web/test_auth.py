"""Auth schemes: accepted credentials, rotation, combinators, and malformed input of every kind."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_middleware.web.auth import (
    AllOf,
    AnyOf,
    BasicAuth,
    Dialog360Signature,
    HeaderAuth,
    HubSignature256,
    NoAuth,
    precheck,
)

BODY = b'{"object":"whatsapp_business_account","entry":[]}'
# Computed independently with `openssl dgst -sha256 -hmac <key>`.
SIG_PARTNER = "271bff1dddcc039b87f299732cd62bea35d56a3c8cc88af006177c5f970d7e3e"  # key "partner-secret"
SIG_META = "ee9f05f989bc0aa2693d85691a477f8b8403933cde7959a1c5c6be7ea85e8d3d"  # key "meta-app-secret"
# RFC 4231, test case 2.
RFC_KEY, RFC_DATA = b"Jefe", b"what do ya want for nothing?"
RFC_SIG = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def basic(user: str, pw: str) -> dict[str, str]:
    return {"authorization": BasicAuth.header_value(user, pw)}


# -- Basic ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers,expected",
    [
        pytest.param(basic("u", "new"), True, id="current"),
        pytest.param(basic("u", "old"), True, id="rotated-out-still-accepted"),
        pytest.param(basic("ops", "third"), True, id="other-user"),
        pytest.param(basic("u", "nope"), False, id="wrong-password"),
        pytest.param(basic("ops", "new"), False, id="password-of-another-user"),
        pytest.param({"authorization": "basic " + base64.b64encode(b"u:new").decode()}, True, id="scheme-lowercase"),
        pytest.param({"authorization": "  Basic   " + base64.b64encode(b"u:new").decode() + " "}, True, id="spaces"),
        pytest.param({}, False, id="absent"),
        pytest.param({"authorization": ""}, False, id="empty"),
        pytest.param({"authorization": "Basic"}, False, id="no-token"),
        pytest.param({"authorization": "Basic %%%"}, False, id="not-base64"),
        pytest.param({"authorization": "Basic dTpuZXc"}, False, id="bad-padding"),
        pytest.param({"authorization": "Bearer dTpuZXc="}, False, id="bearer"),
        pytest.param({"authorization": "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode()}, False, id="binary"),
        pytest.param({"authorization": "Basic ü"}, False, id="non-ascii"),
        pytest.param({"authorization": basic("u", "new")["authorization"] + "," + "Basic x"}, False, id="repeated"),
        # The exact value the sender is given is compared whole first; anything near it is parsed.
        pytest.param({"authorization": basic("u", "new")["authorization"] + "x"}, False, id="exact-plus-garbage"),
        pytest.param({"authorization": basic("u", "new")["authorization"][:-1]}, False, id="exact-cut-short"),
        pytest.param({"authorization": "Basic \u20ac"}, False, id="beyond-latin-1"),
    ],
)
def test_basic(headers: dict[str, str], expected: bool) -> None:
    auth = BasicAuth("u", "new", also=[("u", "old"), ("ops", "third")])
    assert auth.verify(headers, None) is expected
    assert precheck(auth, headers) is expected


@pytest.mark.parametrize("user,pw", [("", "x"), ("x", ""), ("a:b", "x")])
def test_basic_refuses_bad_config(user: str, pw: str) -> None:
    with pytest.raises(ValueError):
        BasicAuth(user, pw)
    with pytest.raises(ValueError):
        BasicAuth("ok", "ok", also=[(user, pw)])


def test_basic_repr_hides_secrets() -> None:
    assert "new" not in repr(BasicAuth("u", "new"))


# -- header token --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers,expected",
    [
        pytest.param({"x-webhook-token": "t-new"}, True, id="current"),
        pytest.param({"x-webhook-token": "t-old"}, True, id="rotated"),
        pytest.param({"x-webhook-token": " t-new "}, True, id="spaces"),
        pytest.param({"x-webhook-token": "t-ne"}, False, id="prefix"),
        pytest.param({"x-webhook-token": "t-new2"}, False, id="longer"),
        pytest.param({"x-webhook-token": "T-NEW"}, False, id="case"),
        pytest.param({"x-webhook-token": ""}, False, id="empty"),
        pytest.param({"x-webhook-token": "t-new,t-new"}, False, id="repeated"),
        pytest.param({"x-webhook-token": "ÿ\x00"}, False, id="binary"),
        pytest.param({"authorization": "t-new"}, False, id="other-header"),
        pytest.param({}, False, id="absent"),
        pytest.param({"x-webhook-token": "pässwört".encode().decode("latin-1")}, False, id="utf8-other"),
    ],
)
def test_header_token(headers: dict[str, str], expected: bool) -> None:
    auth = HeaderAuth("X-Webhook-Token", "t-new", also=["t-old"])
    assert auth.verify(headers, None) is expected


def test_header_token_utf8_secret() -> None:
    auth = HeaderAuth("X-Token", "pässwort")
    # What a server hands over: the UTF-8 bytes, decoded as latin-1.
    assert auth.verify({"x-token": "pässwort".encode().decode("latin-1")}, None)
    assert not auth.verify({"x-token": "pässwort"}, None)


@pytest.mark.parametrize(
    "header,token",
    [("X_Token", "t"), ("", "t"), ("X Token", "t"), ("X-Token", ""), ("X-Token", " t"), ("X-Token", "a\r\nb")],
)
def test_header_token_refuses_bad_config(header: str, token: str) -> None:
    with pytest.raises(ValueError):
        HeaderAuth(header, token)


# -- signatures ----------------------------------------------------------------------------


def test_vectors() -> None:
    assert Dialog360Signature("partner-secret").sign(BODY) == "sha256=" + SIG_PARTNER
    assert HubSignature256("meta-app-secret").sign(BODY) == "sha256=" + SIG_META
    assert Dialog360Signature(RFC_KEY).sign(RFC_DATA) == "sha256=" + RFC_SIG


@pytest.mark.parametrize(
    "value,body,expected",
    [
        pytest.param(SIG_PARTNER, BODY, True, id="bare-hex"),
        pytest.param("sha256=" + SIG_PARTNER, BODY, True, id="prefixed"),
        pytest.param("SHA256=" + SIG_PARTNER.upper(), BODY, True, id="upper-case"),
        pytest.param(" " + SIG_PARTNER + " ", BODY, True, id="spaces"),
        pytest.param(SIG_PARTNER, BODY + b" ", False, id="body-changed"),
        pytest.param(SIG_PARTNER, BODY[:-1], False, id="body-truncated"),
        pytest.param(SIG_META, BODY, False, id="other-key"),
        pytest.param(SIG_PARTNER[:-1], BODY, False, id="short"),
        pytest.param(SIG_PARTNER + "0", BODY, False, id="long"),
        pytest.param(SIG_PARTNER[:-1] + "g", BODY, False, id="not-hex"),
        pytest.param("sha1=" + SIG_PARTNER, BODY, False, id="other-algorithm"),
        pytest.param("sha256=", BODY, False, id="prefix-only"),
        pytest.param("", BODY, False, id="empty"),
        pytest.param(SIG_PARTNER + "," + SIG_PARTNER, BODY, False, id="repeated"),
        pytest.param(base64.b64encode(bytes.fromhex(SIG_PARTNER)).decode(), BODY, False, id="base64"),
        pytest.param("é" * 64, BODY, False, id="non-ascii"),
    ],
)
def test_360dialog_signature(value: str, body: bytes, expected: bool) -> None:
    auth = Dialog360Signature("partner-secret")
    headers = {"x-360dialog-signature": value}
    assert auth.verify(headers, body) is expected
    assert auth.needs_body


def test_360dialog_signature_rotation_and_header_name() -> None:
    auth = Dialog360Signature("new-secret", also=["partner-secret"], header="X-Partner-Signature")
    assert auth.verify({"x-partner-signature": SIG_PARTNER}, BODY)
    assert not auth.verify({"x-360dialog-signature": SIG_PARTNER}, BODY)


def test_signature_precheck_refuses_before_the_body() -> None:
    auth = Dialog360Signature("partner-secret")
    assert not precheck(auth, {})
    assert not precheck(auth, {"x-360dialog-signature": "zz"})
    assert precheck(auth, {"x-360dialog-signature": "0" * 64})  # well-formed: the body decides
    assert not auth.verify({"x-360dialog-signature": SIG_PARTNER}, None)


@pytest.mark.parametrize(
    "value,expected",
    [
        pytest.param("sha256=" + SIG_META, True, id="prefixed"),
        pytest.param(SIG_META, False, id="prefix-required"),
        pytest.param("sha256=" + SIG_PARTNER, False, id="other-key"),
    ],
)
def test_meta_signature(value: str, expected: bool) -> None:
    assert HubSignature256("meta-app-secret").verify({"x-hub-signature-256": value}, BODY) is expected


@pytest.mark.parametrize("secret", ["", b""])
def test_signature_refuses_empty_secret(secret: str | bytes) -> None:
    with pytest.raises(ValueError):
        Dialog360Signature(secret)


# -- combinators ---------------------------------------------------------------------------

BOTH = {**basic("u", "p"), "x-360dialog-signature": SIG_PARTNER}


@pytest.mark.parametrize(
    "headers,all_ok,any_ok",
    [
        pytest.param(BOTH, True, True, id="both"),
        pytest.param(basic("u", "p"), False, True, id="basic-only"),
        pytest.param({"x-360dialog-signature": SIG_PARTNER}, False, True, id="signature-only"),
        pytest.param({**basic("u", "x"), "x-360dialog-signature": SIG_PARTNER}, False, True, id="bad-basic"),
        pytest.param({**basic("u", "p"), "x-360dialog-signature": SIG_META}, False, True, id="bad-signature"),
        pytest.param({}, False, False, id="none"),
    ],
)
def test_combinators(headers: dict[str, str], all_ok: bool, any_ok: bool) -> None:
    schemes = (BasicAuth("u", "p"), Dialog360Signature("partner-secret"))
    both, either = AllOf(*schemes), AnyOf(*schemes)
    assert both.needs_body and either.needs_body
    assert both.challenge and both.challenge.startswith("Basic")
    assert both.verify(headers, BODY) is all_ok
    assert either.verify(headers, BODY) is any_ok


def test_allof_precheck_refuses_bad_basic_before_the_body() -> None:
    auth = AllOf(BasicAuth("u", "p"), Dialog360Signature("partner-secret"))
    assert precheck(auth, BOTH)
    assert not precheck(auth, {**basic("u", "x"), "x-360dialog-signature": SIG_PARTNER})
    assert not precheck(auth, basic("u", "p"))


def test_header_only_combination_needs_no_body() -> None:
    auth = AnyOf(BasicAuth("u", "p"), HeaderAuth("X-Token", "t"))
    assert not auth.needs_body
    assert auth.verify({"x-token": "t"}, None)


@pytest.mark.parametrize("schemes", [(), (NoAuth(),), ("secret",)])
def test_combinator_refuses_bad_members(schemes: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        AllOf(*schemes)  # type: ignore[arg-type]


# -- no input makes a scheme raise ---------------------------------------------------------

SCHEMES = [
    BasicAuth("u", "p", also=[("v", "q")]),
    HeaderAuth("X-Token", "t"),
    Dialog360Signature("s"),
    HubSignature256("s"),
    AllOf(BasicAuth("u", "p"), Dialog360Signature("s")),
    AnyOf(HeaderAuth("X-Token", "t"), HubSignature256("s")),
]
NAMES = ["authorization", "x-token", "x-360dialog-signature", "x-hub-signature-256"]
# Header values as servers hand them over: any byte but CR/LF/NUL, decoded as latin-1.
VALUES = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1")),
    st.sampled_from(["Basic ", "sha256=", "Basic dTpw", "Basic dTpw==="]).flatmap(
        lambda p: st.text(max_size=80).map(lambda t: p + t)
    ),
)


@settings(max_examples=400, deadline=None)
@given(headers=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=4), body=st.none() | st.binary(max_size=64))
def test_malformed_headers_never_raise(headers: dict[str, str], body: bytes | None) -> None:
    for scheme in SCHEMES:
        assert scheme.verify(headers, body) in (True, False)
        assert precheck(scheme, headers) in (True, False)
