"""When a plan runs: ``manual``, ``every 1h``, ``cron 0 18 * * 1-5 Asia/Shanghai``, ``at <iso time>``.

A schedule answers one pure question, ``next_due(after)``: the first instant strictly after
``after`` (an aware datetime) at which a run is due, or None when it never is again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .units import format_duration, parse_duration

__all__ = ["Schedule", "parse_schedule"]


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; ``kind`` is "manual", "every", "cron" or "at"."""

    kind: str
    text: str
    every: float | None = None
    cron: str | None = None
    at: datetime | None = None
    tz: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def next_due(self, after: datetime) -> datetime | None:
        """The first due instant strictly after ``after``, in the schedule's time zone."""
        after = after.astimezone(self.zone)
        if self.kind == "manual":
            return None
        if self.kind == "at":
            assert self.at is not None
            return self.at if self.at > after else None
        if self.kind == "every":
            assert self.every is not None
            # Aligned on the epoch so "every 1h" runs on the hour, the same after a restart.
            epoch = after.timestamp()
            step = self.every
            due = (epoch // step + 1) * step
            return datetime.fromtimestamp(due, self.zone)
        assert self.cron is not None
        return croniter(self.cron, after).get_next(datetime)

    def __str__(self) -> str:
        return self.text


def parse_schedule(text: str) -> Schedule:
    """Parse the plan-file spelling; raises ValueError saying which forms are accepted."""
    words = text.split()
    if not words:
        raise ValueError(_FORMS)
    head = words[0].lower()
    if head == "manual" and len(words) == 1:
        return Schedule("manual", text)
    if head == "every" and len(words) == 2:
        seconds = parse_duration(words[1])
        if seconds <= 0:
            raise ValueError(f"'every' needs a positive interval, got {words[1]!r}")
        return Schedule("every", f"every {format_duration(seconds)}", every=seconds)
    if head == "cron" and len(words) in (6, 7):
        expr = " ".join(words[1:6])
        tz = words[6] if len(words) == 7 else "UTC"
        _check_zone(tz)
        if not croniter.is_valid(expr):
            raise ValueError(f"{expr!r} is not a valid cron expression (minute hour day month weekday)")
        schedule = Schedule("cron", text, cron=expr, tz=tz)
        try:
            schedule.next_due(datetime.now(UTC))
        except Exception:  # croniter searches a few years ahead, then gives up (30 February)
            raise ValueError(f"{expr!r} never fires: no date matches it (a 30 February?)") from None
        return schedule
    if head == "at" and len(words) in (2, 3):
        tz = words[2] if len(words) == 3 else "UTC"
        _check_zone(tz)
        try:
            when = datetime.fromisoformat(words[1])
        except ValueError:
            raise ValueError(f"'at' needs an ISO time such as 2026-11-24T09:00, got {words[1]!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=ZoneInfo(tz))
        return Schedule("at", text, at=when, tz=tz)
    raise ValueError(_FORMS + f", got {text!r}")


_FORMS = (
    "a schedule is 'manual', 'every 1h', 'cron 0 18 * * 1-5 [Time/Zone]' "
    "or 'at 2026-11-24T09:00 [Time/Zone]'"
)


def _check_zone(tz: str) -> None:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}; use an IANA name such as 'Asia/Shanghai'") from None


def utc_now() -> datetime:
    return datetime.now(UTC)

