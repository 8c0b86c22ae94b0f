"""The retry decision on a fake clock: backoff, Retry-After, the budget, sends that may have gone out."""

from __future__ import annotations

import email.utils

import pytest

from wa_middleware.errors import ConfigurationError
from wa_middleware.messaging import ApiError, NotRetryable, RateLimited, Retry, TransportError, is_retryable
from wa_middleware.messaging._wire import parse_retry_after
from wa_middleware.messaging.retry import Attempts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def attempts(policy: Retry, clock: Clock, jitter: float = 1.0, **kwargs: float) -> Attempts:
    return Attempts(policy, clock=clock, jitter=lambda: jitter, **kwargs)  # type: ignore[arg-type]


def busy(retry_after: float | None = None) -> ApiError:
    return ApiError(503, None, "busy", retry_after=retry_after)


def test_backoff_doubles_up_to_its_cap() -> None:
    clock = Clock()
    state = attempts(Retry(attempts=10, budget=1000, backoff=0.5, max_backoff=3), clock)
    delays = []
    for _ in range(5):
        state.made += 1
        delay = state.delay_after(busy(), sends=True)
        assert delay is not None
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_spreads_between_half_and_full() -> None:
    clock = Clock()
    low = attempts(Retry(backoff=1), clock, jitter=0.0)
    low.made = 1
    assert low.delay_after(busy(), sends=True) == 0.5


def test_retry_after_is_honoured_even_above_the_cap() -> None:
    clock = Clock()
    state = attempts(Retry(budget=100, max_backoff=1), clock)
    state.made = 1
    assert state.delay_after(busy(retry_after=7), sends=True) == 7


def test_no_wait_ends_past_the_budget() -> None:
    clock = Clock()
    state = attempts(Retry(budget=10, backoff=1), clock)
    state.made = 1
    assert state.delay_after(busy(retry_after=9.9), sends=True) == 9.9
    assert state.delay_after(busy(retry_after=10), sends=True) is None
    clock.now += 9.5
    assert state.delay_after(busy(retry_after=1), sends=True) is None
    assert state.timeout(5) == pytest.approx(0.5)


def test_attempts_are_counted() -> None:
    clock = Clock()
    state = attempts(Retry(attempts=2, budget=100), clock)
    state.made = 1
    assert state.delay_after(busy(), sends=True) is not None
    state.made = 2
    assert state.delay_after(busy(), sends=True) is None


def test_a_call_may_cap_its_attempts_and_budget() -> None:
    clock = Clock()
    state = attempts(Retry(attempts=5, budget=100), clock, limit=1, budget=2)
    assert state.deadline == clock.now + 2
    assert attempts(Retry(budget=3), clock, budget=50).deadline == clock.now + 3  # only ever tighter
    state.made = 1
    assert state.delay_after(busy(), sends=False) is None


@pytest.mark.parametrize(
    ("error", "sends", "retried"),
    [
        pytest.param(ApiError(400, 100, "bad"), True, False, id="4xx"),
        pytest.param(ApiError(404, None, "no"), False, False, id="404"),
        pytest.param(ApiError(429, None, "slow"), True, True, id="429"),
        pytest.param(ApiError(400, 130429, "throughput"), True, True, id="throughput-code"),
        pytest.param(TransportError("refused", maybe_sent=False), True, True, id="never-sent"),
        pytest.param(TransportError("timeout", maybe_sent=True), True, False, id="maybe-sent-send"),
        pytest.param(TransportError("timeout", maybe_sent=True), False, True, id="maybe-sent-read"),
    ],
)
def test_what_is_retried(error: ApiError | TransportError, sends: bool, retried: bool) -> None:
    state = attempts(Retry(budget=100), Clock())
    state.made = 1
    assert (state.delay_after(error, sends=sends) is not None) == retried


def test_the_queueing_allowance_leaves_time_for_the_request() -> None:
    clock = Clock()
    state = attempts(Retry(budget=10), clock)
    assert state.queueing_allowance(timeout=4) == 6
    clock.now += 8
    assert state.queueing_allowance(timeout=4) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("3", 3.0, id="seconds"),
        pytest.param(" 1.5 ", 1.5, id="fractional"),
        pytest.param("-4", 0.0, id="negative"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("nan", None, id="nan"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30


def test_the_retry_protocol() -> None:
    assert not is_retryable(NotRetryable("bad input"))
    assert not is_retryable(ApiError(401, 0, "key"))
    assert is_retryable(RateLimited("1", 2.0)) and is_retryable(ValueError())


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"budget": 0}, {"backoff": -1}, {"media_attempts": 0}],
)
def test_the_policy_is_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        Retry(**kwargs)  # type: ignore[arg-type]
