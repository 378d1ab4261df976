"""Outcome classification, explanations, backoff and Retry-After."""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from synctask import ErrorRule, Failure, OutcomeKind, RetryPolicy, classify, parse_retry_after


@pytest.mark.parametrize("status, kind", [
    (200, OutcomeKind.INVALID),  # the caller only classifies failures; a 2xx here is not ours to retry
    (400, OutcomeKind.INVALID), (401, OutcomeKind.FATAL), (403, OutcomeKind.FATAL),
    (404, OutcomeKind.INVALID), (408, OutcomeKind.TIMEOUT), (418, OutcomeKind.RATE_LIMITED),
    (429, OutcomeKind.RATE_LIMITED), (500, OutcomeKind.SERVER), (503, OutcomeKind.SERVER),
])
def test_status_codes_map_to_outcome_kinds(status, kind):
    assert classify(status=status).kind is kind


@pytest.mark.parametrize("exc, kind", [
    (ConnectionResetError("reset"), OutcomeKind.NETWORK),
    (TimeoutError(), OutcomeKind.TIMEOUT),
    (TimeoutError(), OutcomeKind.TIMEOUT),
    (OSError("no route"), OutcomeKind.NETWORK),
    (asyncio.CancelledError(), OutcomeKind.CANCELLED),
    (KeyError("x"), OutcomeKind.FATAL),
])
def test_exceptions_map_to_outcome_kinds(exc, kind):
    assert classify(exc=exc).kind is kind


def test_retry_after_seconds_and_http_date_are_read_from_headers():
    now = 1_700_000_000.0
    assert classify(status=429, headers={"Retry-After": "12"}).retry_after == 12.0
    date = "Tue, 14 Nov 2023 22:13:40 GMT"  # 20 s after now
    assert classify(status=429, headers={"retry-after": date}, now=now).retry_after == 20.0
    assert parse_retry_after("garbage", now) is None
    assert parse_retry_after("-5") == 0.0


def test_user_rules_come_first_and_match_the_chinese_messages():
    rules = [
        ErrorRule(re.compile(r"每分钟最多访问该接口\d+次"), OutcomeKind.RATE_LIMITED, on="message", cooldown=60.0),
        ErrorRule(re.compile(r"每天最多访问该接口\d+次"), OutcomeKind.QUOTA, on="message"),
    ]
    minute = classify(status=200, message="抱歉，您每分钟最多访问该接口500次", rules=rules)
    assert (minute.kind, minute.retry_after) == (OutcomeKind.RATE_LIMITED, 60.0)
    assert classify(message="抱歉，您每天最多访问该接口2000次", rules=rules).kind is OutcomeKind.QUOTA


def test_every_failure_explains_what_happened_what_we_did_and_what_to_do():
    failure = classify(status=401, message="token invalid")
    text = failure.explain("stopped plan daily gracefully")
    assert text == ("the vendor refused us in a way retrying cannot fix (HTTP 401): token invalid; "
                    "synctask stopped plan daily gracefully; check the credentials and the api name, "
                    "then start the plan again.")
    for kind in OutcomeKind:
        if kind is not OutcomeKind.OK:
            assert Failure(kind).explain("did x").count(";") == 2


def test_backoff_grows_exponentially_up_to_the_cap_with_full_jitter():
    policy = RetryPolicy(attempts=10, base=0.5, cap=8.0, rng=random.Random(1))
    assert [policy.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    delays = [policy.delay(5) for _ in range(2000)]
    assert 0.0 <= min(delays) and max(delays) <= 8.0
    assert 3.5 < sum(delays) / len(delays) < 4.5  # uniform over [0, 8]


def test_retry_after_wins_over_a_shorter_backoff():
    policy = RetryPolicy(base=0.5, cap=1.0, jitter=False)
    assert policy.delay(1, retry_after=30.0) == 30.0


def test_attempts_count_the_first_try():
    policy = RetryPolicy(attempts=3)
    assert [policy.should_retry(n) for n in (1, 2, 3)] == [True, True, False]


def test_testing_policy_has_no_delay():
    assert RetryPolicy.testing().delay(7) == 0.0


def test_parse_accepts_the_plan_file_spelling():
    policy = RetryPolicy.parse(5, "0.5s..60s")
    assert (policy.attempts, policy.base, policy.cap) == (5, 0.5, 60.0)
    with pytest.raises(ValueError, match="first <= largest"):
        RetryPolicy(base=5.0, cap=1.0)
