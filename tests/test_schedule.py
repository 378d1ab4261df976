"""Schedules: next due instants for every, cron with a time zone, at, manual."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from synctask import parse_schedule

NOW = datetime(2026, 11, 25, 12, 7, tzinfo=UTC)  # a Wednesday


def test_manual_is_never_due():
    assert parse_schedule("manual").next_due(NOW) is None


def test_every_is_aligned_on_the_clock():
    due = parse_schedule("every 1h").next_due(NOW)
    assert due == datetime(2026, 11, 25, 13, 0, tzinfo=UTC)


def test_cron_in_a_time_zone():
    schedule = parse_schedule("cron 0 18 * * 1-5 Asia/Shanghai")
    due = schedule.next_due(NOW)  # 20:07 in Shanghai: today's 18:00 has passed
    assert due == datetime(2026, 11, 26, 18, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_at_is_due_once():
    schedule = parse_schedule("at 2026-11-26T09:00")
    assert schedule.next_due(NOW) == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert schedule.next_due(datetime(2026, 11, 27, tzinfo=UTC)) is None


@pytest.mark.parametrize("text, message", [
    ("sometimes", "a schedule is"),
    ("every 0s", "positive interval"),
    ("cron 99 * * * *", "not a valid cron"),
    ("cron 0 18 * * * Mars/Olympus", "unknown time zone"),
    ("at tomorrow", "ISO time"),
])
def test_bad_schedules_say_which_forms_work(text, message):
    with pytest.raises(ValueError, match=message):
        parse_schedule(text)
