"""The 360dialog subcommands against a local server that records requests and answers like the API."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops_helpers import RecordingServer, recording_server
from wa_middleware import cli
from wa_middleware.cli.commands import EXIT_API, EXIT_CONNECTION, EXIT_OK, EXIT_USAGE, SAMPLE_DELIVERY
from wa_middleware.ops import urlcheck
from wa_middleware.ops.dialog360 import ApiError, Client, describe_error

KEY = "test-key-4f1b9c0e7d"
URL = "https://hooks.example.com/webhook"


@pytest.fixture
def api() -> Iterator[RecordingServer]:
    with recording_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("D360_API_KEY", raising=False)
    monkeypatch.delenv("D360_BASE_URL", raising=False)


def run(api: RecordingServer, *argv: str, key: str | None = KEY) -> int:
    args = [argv[0], "--base-url", api.url, *argv[1:]]
    if key is not None:
        args += ["--api-key", key]
    return cli.main(args)


def test_set_webhook_posts_url_and_basic_auth(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/v1/configs/webhook", body={"url": URL, "headers": {"Authorization": "Basic xyz"}})
    assert run(api, "set-webhook", URL, "--basic-auth", "alice:s3cret:x", "-H", "X-Tenant: acme") == EXIT_OK
    [req] = api.requests
    assert (req.method, req.path) == ("POST", "/v1/configs/webhook")
    assert req.headers["d360-api-key"] == KEY
    assert req.headers["content-type"] == "application/json"
    expected = "Basic " + base64.b64encode(b"alice:s3cret:x").decode()
    assert req.json() == {"url": URL, "headers": {"X-Tenant": "acme", "Authorization": expected}}
    out = capsys.readouterr()
    assert KEY not in out.out + out.err
    assert "Basic xyz" not in out.out  # header values are hidden unless --show-secrets
    assert "url: " + URL in out.out


def test_set_webhook_without_headers_sends_empty_object(api: RecordingServer) -> None:
    api.reply("POST", "/v1/configs/webhook", body={"url": URL, "headers": None})
    assert run(api, "set-webhook", URL) == EXIT_OK
    assert api.requests[0].json() == {"url": URL, "headers": {}}


def test_get_webhook_show_secrets_and_json(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("GET", "/v1/configs/webhook", body={"url": URL, "headers": {"Authorization": "Basic abc"}})
    assert run(api, "get-webhook", "--json", "--show-secrets") == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"url": URL, "headers": {"Authorization": "Basic abc"}}
    [req] = api.requests
    assert (req.method, req.path, req.body) == ("GET", "/v1/configs/webhook", b"")


def test_waba_webhook_set_and_get(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/waba_webhook", body={"url": URL, "headers": {}, "override_all": True})
    api.reply(
        "GET",
        "/waba_webhook",
        body={"url": URL, "headers": None, "waba_id": "123", "numbers_on_this_waba": ["4915100000000"]},
    )
    assert run(api, "set-waba-webhook", URL, "--override-all") == EXIT_OK
    assert api.requests[0].json() == {"url": URL, "headers": {}, "override_all": True}
    assert "asynchronously" in capsys.readouterr().out
    assert run(api, "set-waba-webhook", URL) == EXIT_OK
    assert api.requests[1].json()["override_all"] is False
    assert run(api, "get-waba-webhook") == EXIT_OK
    out = capsys.readouterr().out
    assert "waba_id: 123" in out
    assert "numbers_on_this_waba: 4915100000000" in out


def test_api_key_and_base_url_from_environment(api: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    api.reply("GET", "/v1/configs/webhook", body={"url": URL, "headers": None})
    monkeypatch.setenv("D360_API_KEY", "env-key")
    monkeypatch.setenv("D360_BASE_URL", api.url)
    assert cli.main(["get-webhook"]) == EXIT_OK
    assert api.requests[0].headers["d360-api-key"] == "env-key"


def test_missing_api_key(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(api, "get-webhook", key=None) == EXIT_USAGE
    assert "D360_API_KEY" in capsys.readouterr().err
    assert api.requests == []


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(
            401,
            {"meta": {"success": False, "http_code": 401, "developer_message": "Invalid api key"}},
            "360dialog answered 401: Invalid api key [the API key was refused",
            id="legacy-meta-401",
        ),
        pytest.param(
            400,
            {"meta": {"success": False, "developer_message": "Bad url", "details": ["url: not https"]}},
            "Bad url (url: not https)",
            id="legacy-meta-details",
        ),
        pytest.param(400, {"error": "url is invalid"}, "360dialog answered 400: url is invalid", id="error-string"),
        pytest.param(422, {"error": {"message": "nope"}}, "422: nope", id="error-object"),
        pytest.param(502, b"<html>Bad Gateway</html>", "<html>Bad Gateway</html> [a server-side error", id="raw-5xx"),
        pytest.param(500, b"", "(empty body) [a server-side error", id="empty-5xx"),
    ],
)
def test_error_answers(
    api: RecordingServer, capsys: pytest.CaptureFixture[str], status: int, body: object, expected: str
) -> None:
    api.reply("POST", "/v1/configs/webhook", status=status, body=body)
    assert run(api, "set-webhook", URL) == EXIT_API
    err = capsys.readouterr().err
    assert expected in err
    assert KEY not in err


def test_api_key_echoed_by_api_is_scrubbed(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("GET", "/v1/configs/webhook", status=401, body={"error": f"key {KEY} unknown"})
    assert run(api, "get-webhook") == EXIT_API
    err = capsys.readouterr().err
    assert KEY not in err and "<api key>" in err


def test_redirect_is_not_followed(api: RecordingServer) -> None:
    api.reply("GET", "/v1/configs/webhook", status=302, body=b"")
    assert run(api, "get-webhook") == EXIT_API
    assert len(api.requests) == 1  # the key was not replayed to the Location


def test_unreachable_api(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.ops_helpers import free_port

    code = cli.main(["get-webhook", "--api-key", KEY, "--base-url", f"http://127.0.0.1:{free_port()}"])
    assert code == EXIT_CONNECTION
    err = capsys.readouterr().err
    assert "no answer" in err and KEY not in err


def test_timeout(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("GET", "/v1/configs/webhook", body={}, delay=1.0)
    assert run(api, "get-webhook", "--timeout", "0.2") == EXIT_CONNECTION
    assert "timed out" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "headers", "messages"),
    [
        pytest.param("http://hooks.example.com/w", [], ["must use https://"], id="http"),
        pytest.param("https://my_app.example.com/w", [], ["'my_app' contains '_'"], id="underscore-host"),
        pytest.param("https://hooks.example.com:8443/w", [], ["names a port (:8443)"], id="port"),
        pytest.param("https://hooks.example.com:443/w", [], ["names a port (:443)"], id="port-443"),
        pytest.param("https://u:p@hooks.example.com/w", [], ["carries credentials"], id="userinfo"),
        pytest.param("https:///w", [], ["has no host"], id="no-host"),
        pytest.param(URL, ["X_Token: 1"], ["'X_Token' contains '_'"], id="underscore-header"),
        pytest.param(URL, ["NoColon"], ["is not NAME:VALUE"], id="header-shape"),
        pytest.param(
            "http://a_b.example.com:80/w",
            [],
            ["must use https://", "'a_b' contains '_'", "names a port (:80)"],
            id="three-at-once",
        ),
    ],
)
def test_invalid_webhook_url_sends_nothing(
    api: RecordingServer, capsys: pytest.CaptureFixture[str], url: str, headers: list[str], messages: list[str]
) -> None:
    argv = ["set-webhook", url]
    for header in headers:
        argv += ["--header", header]
    assert run(api, *argv) == EXIT_USAGE
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == len(messages)  # one line per violation
    for line, message in zip(lines, messages, strict=True):
        assert message in line
    assert api.requests == []


def test_long_url_only_warns(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/waba_webhook", body={"url": "x", "headers": None})
    long_url = "https://hooks.example.com/" + "a" * 200
    assert run(api, "set-waba-webhook", long_url) == EXIT_OK
    assert "warning: the URL is 226 characters long" in capsys.readouterr().err


def test_url_checks_table() -> None:
    assert urlcheck.check_webhook_url(URL) == []
    assert urlcheck.check_header("Authorization", "Basic x") == []
    assert urlcheck.errors(urlcheck.check_api_base_url("http://127.0.0.1:7200")) == []
    assert urlcheck.errors(urlcheck.check_api_base_url("ftp://x"))


def test_describe_error_hint_only_for_known_status() -> None:
    assert describe_error(418, b'{"error": "teapot"}') == "teapot"


def test_client_repr_hides_key() -> None:
    assert KEY not in repr(Client(KEY))
    with pytest.raises(ValueError):
        Client("")


def test_client_raises_api_error(api: RecordingServer) -> None:
    api.reply("GET", "/waba_webhook", status=403, body={"error": "forbidden"})
    with pytest.raises(ApiError) as info:
        Client(KEY, base_url=api.url).get_waba_webhook()
    assert info.value.status == 403


# -- send-test ---------------------------------------------------------------------------


def test_send_test_sample(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/webhook", body={"status": "stored"})
    assert cli.main(["send-test", api.url + "/webhook", "--basic-auth", "u:p"]) == EXIT_OK
    assert cli.main(["send-test", api.url + "/webhook", "--basic-auth", "u:p"]) == EXIT_OK
    first, second = api.requests
    sent = [req.json()["entry"][0]["changes"][0]["value"]["messages"][0] for req in (first, second)]
    # Every run is a fresh event: a fixed id would be skipped as a duplicate by every run after the first.
    assert sent[0]["id"] != sent[1]["id"] and sent[0]["id"].startswith("wamid.send-test-")
    assert int(sent[0]["timestamp"]) > 1_700_000_000
    body = first.json()
    body["entry"][0]["changes"][0]["value"]["messages"][0].update(id="wamid.wa-middleware-send-test", timestamp="0")
    assert body == SAMPLE_DELIVERY  # otherwise the sample as it was
    assert first.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    out = capsys.readouterr().out
    assert "status: 200" in out and "latency: " in out and " ms" in out
    assert f"message id: {second.json()['entry'][0]['changes'][0]['value']['messages'][0]['id']}" in out


def test_send_test_payload_file(api: RecordingServer, tmp_path: pytest.TempPathFactory) -> None:
    payload = tmp_path / "delivery.json"  # type: ignore[operator]
    payload.write_bytes(b'{"object": "whatsapp_business_account", "entry": []}')
    api.reply("POST", "/w", body={})
    assert cli.main(["send-test", api.url + "/w", "--payload", str(payload)]) == EXIT_OK
    assert api.requests[0].body == payload.read_bytes()


def test_send_test_rejected(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/webhook", status=401, body={"error": "unauthorized"})
    assert cli.main(["send-test", api.url + "/webhook"]) == EXIT_API
    captured = capsys.readouterr()
    assert "status: 401" in captured.out
    assert "only a 200" in captured.err


def test_send_test_missing_payload(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["send-test", "http://127.0.0.1:7299/w", "--payload", "/nonexistent/file.json"]) == EXIT_USAGE


def test_help_everywhere() -> None:
    for command in ["set-webhook", "get-webhook", "set-waba-webhook", "get-waba-webhook", "send-test", "worker"]:
        done = subprocess.run(
            [sys.executable, "-m", "wa_middleware.cli", command, "--help"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "usage: wa-middleware " + command in done.stdout


def test_sample_delivery_decodes_to_one_text_message() -> None:
    from wa_middleware import decode_delivery

    [event] = decode_delivery(json.dumps(SAMPLE_DELIVERY).encode())
    assert event.kind == "message"
    assert event.data.type == "text"  # type: ignore[union-attr]


def test_dry_run_sends_nothing(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(api, "set-waba-webhook", URL, "--basic-auth", "u:pw-secret", "--override-all", "--dry-run") == EXIT_OK
    assert api.requests == []
    out = capsys.readouterr().out
    assert f"would POST {api.url}/waba_webhook" in out
    assert "override_all: True" in out
    assert "pw-secret" not in out and base64.b64encode(b"u:pw-secret").decode() not in out


def test_api_key_that_cannot_be_a_header(api: RecordingServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(api, "get-webhook", key="k\u00e9y with space") == EXIT_USAGE
    assert api.requests == []
    assert "k\u00e9y" not in capsys.readouterr().err


def test_console_script_end_to_end(api: RecordingServer, tmp_path: Path) -> None:
    """The installed ``wa-middleware`` script in its own process, key from the environment."""
    import os

    api.reply("POST", "/v1/configs/webhook", body={"url": URL, "headers": {"Authorization": "Basic dTpw"}})
    script = Path(sys.executable).parent / "wa-middleware"
    env = {**os.environ, "D360_API_KEY": KEY, "D360_BASE_URL": api.url}
    done = subprocess.run(
        [str(script), "set-webhook", URL, "--basic-auth", "u:p"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert KEY not in done.stdout + done.stderr
    assert api.requests[0].headers["d360-api-key"] == KEY
    bad = subprocess.run(
        [str(script), "set-webhook", "http://x_y.example.com:8080/w"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == EXIT_USAGE and len(api.requests) == 1
    assert len([line for line in bad.stderr.splitlines() if line.startswith("error:")]) == 3


def test_embedded_status_still_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["embedded", "status", "--data-dir", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().out.strip() == "not running"


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        pytest.param(["replay", "nomodule_xyz:wa", "--since", "1h"], "no module named 'nomodule_xyz'", id="no-module"),
        pytest.param(["replay", "json:nothing", "--since", "1h"], "has no attribute 'nothing'", id="no-attribute"),
        pytest.param(["replay", "json", "--since", "1h"], "expected MODULE:ATTR", id="no-colon"),
        pytest.param(["replay", "json:dumps", "--since", "1h"], "not a wa_middleware.Webhook", id="not-a-webhook"),
        pytest.param(["dead-letters", "nomodule_xyz:wa", "list"], "--path DIR", id="dead-letters-path-hint"),
    ],
)
def test_cli_mistakes_are_one_line_with_the_fix(argv: list[str], hint: str) -> None:
    command = [sys.executable, "-m", "wa_middleware.cli", *argv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert hint in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_replay_option_mistakes_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "hooks_for_cli.py").write_text(
        "from wa_middleware import NoAuth, Webhook\nwa = Webhook(auth=NoAuth(), broker_url='redis://127.0.0.1:1/0')\n"
    )
    for extra, hint in ((["--since", "yesterday"], "--since takes a duration"),
                        (["--since", "1h", "--callback", "nope"], "no callback named 'nope'")):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "wa_middleware.cli", "replay", "hooks_for_cli:wa", "--path", str(tmp_path), *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert hint in done.stderr and "Traceback" not in done.stderr


def test_worker_path_works_before_the_spec(tmp_path: Path) -> None:
    """``-P DIR`` placed before MODULE:ATTR no longer swallows it (one DIR per flag)."""
    from wa_middleware.cli import build_parser

    args = build_parser().parse_args(["worker", "-P", str(tmp_path), "hooks:wa"])
    assert args.app == "hooks:wa" and args.path == [str(tmp_path)]
