"""The send ledger on real Redis: a unit that runs again does not send again, across retries and kills."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from wa_middleware.messaging import (
    AsyncClient,
    AsyncOutbox,
    AsyncReplies,
    AsyncSendLedger,
    Client,
    Dialog360,
    Outbox,
    Recorded,
    Replies,
    Retry,
    SendLedger,
    SendResult,
)
from wa_middleware.messaging.types import Image, Reaction, Text

from .conftest import KEY, NUMBER, USER
from .standin import StandIn, meta_error

UNIT = "m:wamid.IN|bot.on_text"
FAST = Retry(attempts=3, budget=5.0, backoff=0.01)


@pytest.fixture
def client(standin: StandIn) -> Iterator[Client]:
    with Client(Dialog360(KEY, standin.url), retry=FAST) as c:
        yield c


@pytest.fixture
def ledger(redis_client: redis.Redis, prefix: str) -> SendLedger:
    return SendLedger(redis_client, prefix=prefix, ttl=60)


def replies(client: Client, ledger: SendLedger | None, unit: str = UNIT, **kwargs: bool) -> Replies:
    return Replies(client, ledger, unit, NUMBER, USER, "wamid.IN", **kwargs)


def test_the_same_unit_twice_sends_once(standin: StandIn, client: Client, ledger: SendLedger) -> None:
    first = replies(client, ledger).reply("Thanks!")
    second = replies(client, ledger).reply("Thanks!")
    assert len(standin.sends()) == 1
    assert second.message_id == first.message_id
    assert (first.replayed, second.replayed) == (False, True)


def test_the_nth_send_of_a_run_is_its_own(standin: StandIn, client: Client, ledger: SendLedger) -> None:
    run = replies(client, ledger)
    a, b = run.reply("one"), run.reply("two")
    assert len(standin.sends()) == 2 and a.message_id != b.message_id
    again = replies(client, ledger)
    assert [again.reply("one").message_id, again.reply("two").message_id] == [a.message_id, b.message_id]
    third = again.reply("three")  # a send the earlier runs never made
    assert not third.replayed
    assert [r.json["text"]["body"] for r in standin.sends()] == ["one", "two", "three"]


def test_different_units_are_apart(standin: StandIn, client: Client, ledger: SendLedger) -> None:
    replies(client, ledger, "m:wamid.IN|bot.a").reply("x")
    replies(client, ledger, "m:wamid.IN|bot.b").reply("x")
    assert len(standin.sends()) == 2


def test_a_callback_that_replies_then_fails_retried_three_times_sends_one_message(
    standin: StandIn, client: Client, ledger: SendLedger
) -> None:
    def callback(run: Replies) -> None:
        run.reply("Your order is confirmed.", quote=True)
        raise RuntimeError("the database went away")

    for _ in range(1 + 3):  # the first run and three retries, as the worker would run them
        with pytest.raises(RuntimeError):
            callback(replies(client, ledger))
    (sent,) = standin.sends()
    assert sent.json["context"] == {"message_id": "wamid.IN"}


def test_a_send_that_failed_is_made_by_the_next_run(standin: StandIn, client: Client, ledger: SendLedger) -> None:
    standin.script(meta_error(131026, "Message undeliverable", status=400))
    with pytest.raises(Exception, match="131026"):
        replies(client, ledger).reply("x")
    assert replies(client, ledger).reply("x").replayed is False
    assert len(standin.sends()) == 2


def test_react_and_mark_read(standin: StandIn, client: Client, ledger: SendLedger) -> None:
    for _ in range(2):
        run = replies(client, ledger)
        run.mark_read(typing=True)
        run.react("\N{THUMBS UP SIGN}")
    reads = [r.json for r in standin.requests if "status" in r.json]
    reactions = standin.sends()
    assert len(reads) == 2  # marking read is harmless twice: not recorded
    assert [r.json["reaction"] for r in reactions] == [{"message_id": "wamid.IN", "emoji": "\N{THUMBS UP SIGN}"}]


def test_resend_sends_again_and_records_afresh(standin: StandIn, client: Client, ledger: SendLedger) -> None:
    first = replies(client, ledger).reply("x")
    forced = replies(client, ledger, resend=True).reply("x")
    after = replies(client, ledger).reply("x")
    assert len(standin.sends()) == 2
    assert forced.message_id != first.message_id and after.message_id == forced.message_id


def test_a_changed_send_is_not_resent_but_warned_about(
    standin: StandIn, client: Client, ledger: SendLedger, caplog: pytest.LogCaptureFixture
) -> None:
    replies(client, ledger).reply("It is 10:00")
    with caplog.at_level(logging.WARNING, "wa_middleware.messaging"):
        result = replies(client, ledger).reply("It is 10:01")
    assert result.replayed and len(standin.sends()) == 1
    assert "recorded send differs" in caplog.text


def test_entries_expire(client: Client, ledger: SendLedger, redis_client: redis.Redis) -> None:
    replies(client, ledger).reply("x")
    assert 0 < redis_client.pttl(ledger.key(UNIT)) <= 60_000
    ledger.forget(UNIT)
    assert ledger.lookup(UNIT, 1) is None


def test_no_send_when_the_ledger_cannot_be_read(standin: StandIn, client: Client) -> None:
    from tests.conftest import free_port

    down = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    with pytest.raises(redis.ConnectionError):
        replies(client, SendLedger(down, prefix="x")).reply("x")
    assert standin.sends() == []
    down.close()


def test_a_record_that_fails_is_logged_and_the_result_kept(
    standin: StandIn, client: Client, redis_client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(SendLedger):
        def record(self, unit_key: str, n: int, entry: Recorded) -> None:
            raise redis.ConnectionError("gone")

    with caplog.at_level(logging.ERROR, "wa_middleware.messaging"):
        result = replies(client, Broken(redis_client, prefix=prefix)).reply("x")
    assert result.message_id and len(standin.sends()) == 1
    assert "send ledger record failed" in caplog.text


def test_without_a_ledger_replies_just_send(standin: StandIn, client: Client) -> None:
    replies(client, None).reply("x")
    replies(client, None).reply("x")
    assert len(standin.sends()) == 2


def test_replies_need_someone_to_answer(client: Client, ledger: SendLedger) -> None:
    run = Replies(client, ledger, UNIT, NUMBER, None, None)
    with pytest.raises(ValueError, match="no sender"):
        run.reply("x")
    with pytest.raises(ValueError, match="react"):
        run.react("x")
    with pytest.raises(ValueError, match="mark as read"):
        run.mark_read()


def test_the_outbox_records_what_a_run_sent(ledger: SendLedger) -> None:
    outbox = Outbox()
    for _ in range(2):
        run = Replies(outbox, ledger, UNIT, NUMBER, USER, "wamid.IN")
        run.mark_read()
        run.reply("Hello", quote=True)
        run.send(Image(link="https://example.com/a.png"))
        run.react("\N{THUMBS UP SIGN}")
    assert outbox.texts == ["Hello"]  # the second run replayed every send from the ledger
    assert [type(s.content) for s in outbox.sent] == [Text, Image, Reaction]
    assert outbox.sent[0].reply_to == "wamid.IN" and outbox.sent[0].phone_number_id == NUMBER
    assert len(outbox.reads) == 2


async def test_async_replies(standin: StandIn, redis_url: str, prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    ledger = AsyncSendLedger(client, prefix=prefix, ttl=60)
    async with AsyncClient(Dialog360(KEY, standin.url), retry=FAST) as api:
        results: list[SendResult] = []
        for _ in range(3):
            run = AsyncReplies(api, ledger, UNIT, NUMBER, USER, "wamid.IN")
            await run.mark_read()
            results.append(await run.reply("Hi"))
            results.append(await run.react("\N{THUMBS UP SIGN}"))
    assert len(standin.sends()) == 2
    assert [r.replayed for r in results] == [False, False, True, True, True, True]
    outbox = AsyncOutbox()
    await AsyncReplies(outbox, None, UNIT, NUMBER, USER, "wamid.IN").reply("x")
    assert outbox.texts == ["x"]
    await ledger.forget(UNIT)
    await client.aclose()


# -- across processes: a worker killed after replying --------------------------------------

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import redis
    from wa_middleware.messaging import Client, Dialog360, Replies, SendLedger

    api_url, redis_url, prefix, unit, mode = sys.argv[1:]
    ledger = SendLedger(redis.Redis.from_url(redis_url), prefix=prefix, ttl=60)
    if mode == "kill-before-record":
        # Inside the one window: the API answered, the ledger has not recorded it.
        ledger.record = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
    run = Replies(Client(Dialog360("key", api_url)), ledger, unit, "PNID", "4915112345678", "wamid.IN")
    result = run.reply("Thanks!")
    print(result.message_id, result.replayed, flush=True)
    if mode == "kill-after-reply":
        os.kill(os.getpid(), signal.SIGKILL)  # a callback cut short after its reply
    """
)


def run_script(
    tmp_path: Path, standin: StandIn, redis_url: str, prefix: str, mode: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "callback.py"
    path.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(path), standin.url, redis_url, prefix, UNIT, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_worker_killed_after_the_reply_and_rerun_sends_one(
    tmp_path: Path, standin: StandIn, redis_url: str, prefix: str
) -> None:
    killed = run_script(tmp_path, standin, redis_url, prefix, "kill-after-reply")
    assert killed.returncode == -9, killed.stderr
    rerun = run_script(tmp_path, standin, redis_url, prefix, "rerun")
    assert rerun.returncode == 0, rerun.stderr
    assert killed.stdout.split() == [rerun.stdout.split()[0], "False"]
    assert rerun.stdout.split()[1] == "True"
    assert len(standin.sends()) == 1


def test_the_one_window_killed_between_the_answer_and_the_record_sends_twice(
    tmp_path: Path, standin: StandIn, redis_url: str, prefix: str
) -> None:
    killed = run_script(tmp_path, standin, redis_url, prefix, "kill-before-record")
    assert killed.returncode == -9 and killed.stdout == ""
    rerun = run_script(tmp_path, standin, redis_url, prefix, "rerun")
    assert rerun.stdout.split()[1] == "False"
    assert len(standin.sends()) == 2  # documented in docs/replying.md: the window that remains


def test_a_runs_deadline_bounds_its_sends(standin: StandIn, client: Client, ledger: SendLedger) -> None:
    import time

    from wa_middleware.messaging import TransportError

    from .standin import Answer

    with pytest.raises(TransportError, match="no time left") as caught:
        Replies(client, ledger, UNIT, NUMBER, USER, deadline=time.monotonic() - 1).reply("late")
    assert not caught.value.maybe_sent and standin.requests == []
    standin.handler = lambda request: Answer(503, "busy")
    started = time.monotonic()
    with pytest.raises(Exception, match="503"):
        Replies(client, ledger, UNIT, NUMBER, USER, deadline=started + 0.3).reply("x")
    assert time.monotonic() - started < 1.0
