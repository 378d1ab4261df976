"""Limits and their counters: a quota's sliding or clock-aligned window, a concurrency cap.

Each counter answers ``earliest(weight, now)``: the instant a request of that weight may go (see
``limits`` for how sends are held until answered and counted the vendors' way). Pure: no I/O,
time is an argument.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import NamedTuple, Union
from zoneinfo import ZoneInfo

from .errors import LimitError
from .units import format_duration

__all__ = ["Quota", "Concurrency", "Limit", "DAY", "WindowUsage", "Sliding", "Clock", "Slots", "Budget", "Lease",
           "Counter", "merge_log"]

DAY = 86400.0


@dataclass(frozen=True)
class Quota:
    """At most ``rate`` weight per ``per`` seconds, in a sliding window or a clock-aligned one."""

    rate: int
    per: float
    clock: bool = False
    tz: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rate, int) or isinstance(self.rate, bool) or self.rate < 1:
            raise ValueError(f"rate must be a whole number of at least 1, got {self.rate!r}")
        if not (self.per > 0 and math.isfinite(self.per)):
            raise ValueError(f"per must be a positive duration, got {self.per!r}")
        if self.tz is not None:
            ZoneInfo(self.tz)  # raises for an unknown zone

    @property
    def label(self) -> str:
        """A short bounded name for metrics: ``1m``, ``1d-clock``."""
        return format_duration(self.per) + ("-clock" if self.clock else "")

    def __str__(self) -> str:
        text = f"{self.rate} per {format_duration(self.per)}"
        if self.clock:
            text += " (clock-aligned" + (f", {self.tz})" if self.tz else ")")
        return text


@dataclass(frozen=True)
class Concurrency:
    """At most ``cap`` tasks in flight at once."""

    cap: int

    def __post_init__(self) -> None:
        if not isinstance(self.cap, int) or isinstance(self.cap, bool) or self.cap < 1:
            raise ValueError(f"concurrency must be a whole number of at least 1, got {self.cap!r}")

    def __str__(self) -> str:
        return f"{self.cap} in flight"


Limit = Union[Quota, Concurrency]


class WindowUsage(NamedTuple):
    """One limit's use now; ``resets_at``: when a clock window starts again (None: sliding, cap)."""

    limit: Limit
    used: int
    resets_at: float | None

    @property
    def capacity(self) -> int:
        """The limit's allowance: its rate, or its cap."""
        return self.limit.cap if isinstance(self.limit, Concurrency) else self.limit.rate

    def describe(self) -> str:
        """How a person says it: ``48 of 50 in the last 1s``, ``12,345 of 100,000 today, resets
        00:00 Asia/Shanghai``, ``3 of 5 in flight``."""
        limit = self.limit
        if isinstance(limit, Concurrency):
            return f"{self.used:,} of {limit.cap:,} in flight"
        head = f"{self.used:,} of {limit.rate:,}"
        if not limit.clock or self.resets_at is None:
            return f"{head} in the last {format_duration(limit.per)}"
        zone = ZoneInfo(limit.tz) if limit.tz else ZoneInfo("UTC")
        reset = datetime.fromtimestamp(self.resets_at, zone)
        where = limit.tz or "UTC"
        if limit.per == DAY:
            return f"{head} today, resets {reset:%H:%M} {where}"
        if limit.per > DAY:
            return f"{head} this {format_duration(limit.per)}, resets {reset:%Y-%m-%d %H:%M} {where}"
        return f"{head} this {format_duration(limit.per)} window, resets {reset:%H:%M:%S} {where}"


class Sliding:
    """The log of one sliding window, kept as the instants each send stops counting.

    A send answered at ``s`` stops counting at the first float ``e`` with both ``s + span <= e``
    and ``s <= e - span``: vendors write the window either way, and at exact boundaries float
    rounding can make the two disagree by one ulp; we honour the stricter. ``used`` is the
    weight still inside the window, ``held`` of which is in flight (no expiry known yet)."""

    __slots__ = ("spec", "rate", "span", "expiries", "weights", "used", "held", "last_sent")

    def __init__(self, spec: Quota, margin: float) -> None:
        self.last_sent = -math.inf
        self.held = 0
        self.spec = spec
        self.rate = spec.rate
        self.span = spec.per + margin
        self.expiries: deque[float] = deque()
        self.weights: deque[int] = deque()
        self.used = 0

    def _evict(self, now: float) -> None:
        expiries = self.expiries
        while expiries and expiries[0] <= now:
            expiries.popleft()
            self.used -= self.weights.popleft()

    def earliest(self, weight: int, now: float) -> float:
        expiries = self.expiries
        if expiries and expiries[0] <= now:
            self._evict(now)
        excess = self.used + weight - self.rate
        if excess <= 0:
            return now
        # The instant enough of the oldest weight has left the window. Requests in flight leave
        # after every answered one (their answer is still to come), at an instant not known yet.
        freed = 0
        for expiry, w in zip(expiries, self.weights):
            freed += w
            if freed >= excess:
                return expiry
        if self.held:
            return math.inf
        raise LimitError(f"weight {weight} can never fit in {self.spec}")  # pragma: no cover

    def hold(self, weight: int) -> None:
        """Count an admitted request that is on its way: it stays in the window until settled."""
        self.used += weight
        self.held += weight

    def settle(self, weight: int, answered: float) -> None:
        """The request's answer began at ``answered``: it counts until ``answered + span``."""
        taken = min(weight, self.held)
        self.held -= taken
        self.used -= taken
        if answered >= self.last_sent or not self.expiries:
            self.add(weight, answered)  # the usual order: at the end of the log, as a send is
        else:
            self._insert(weight, answered)  # an answer overtaken by a later one: keep the log sorted

    def add(self, weight: int, now: float) -> None:
        self.used += weight
        if now <= self.last_sent and self.expiries:
            # The instant of the previous send (a burst; or a caller's clock that stepped back):
            # one log entry, more weight, never an earlier expiry. That entry cannot have been
            # evicted yet, since it expires after ``now``.
            self.weights[-1] += weight
            return
        span = self.span
        expiry = now + span
        while expiry - span < now:
            expiry = math.nextafter(expiry, math.inf)
        self.expiries.append(expiry)
        self.weights.append(weight)
        self.last_sent = now

    def _expiry(self, sent: float) -> float:
        span = self.span
        expiry = sent + span
        while expiry - span < sent:
            expiry = math.nextafter(expiry, math.inf)
        return expiry

    def _insert(self, weight: int, sent: float) -> None:
        """Count ``weight`` from ``sent``, which may be earlier than the newest entry (answers
        arrive out of order): entries stay sorted by expiry; the search starts at the end, where
        recent instants are."""
        new = self._expiry(sent)
        expiries, weights = self.expiries, self.weights
        self._evict(sent)
        i = len(expiries)
        while i > 0 and expiries[i - 1] > new:
            i -= 1
        if i > 0 and expiries[i - 1] == new:
            weights[i - 1] += weight
        else:
            expiries.insert(i, new)
            weights.insert(i, weight)
        self.used += weight
        if sent > self.last_sent:
            self.last_sent = sent

    def reset_time(self, now: float) -> float:
        self._evict(now)
        return self.expiries[0] if self.expiries else now

    def charge(self, weight: int, at: float) -> None:
        """Count ``weight`` as answered at ``at``, which may lie ahead (what a killed process may
        have sent that no save recorded: it counts as late as it could have been stamped)."""
        self._insert(weight, at)

    def log(self, now: float | None = None) -> list[tuple[float, int]]:
        """(answer instant, weight) pairs still counting; the instant is never earlier than the
        answer. With ``now``, requests still in flight are included as answered at ``now``."""
        entries = [(e - self.span, w) for e, w in zip(self.expiries, self.weights)]
        if now is not None and self.held:
            entries.append((now, self.held))
        return entries


class Clock:
    """The count of one clock-aligned window; rolls over at the window's end, carrying the
    requests still in flight into the new window (the vendor may stamp them in either)."""

    __slots__ = ("spec", "rate", "per", "zone", "start", "end", "used", "held", "charged", "charged_until")

    def __init__(self, spec: Quota) -> None:
        self.spec = spec
        self.rate = spec.rate
        self.per = spec.per
        self.zone = ZoneInfo(spec.tz) if spec.tz else None
        self.start = self.end = -math.inf
        self.used = 0
        self.held = 0
        self.charged = 0  # counted in every window that begins by ``charged_until`` (see ``charge``)
        self.charged_until = -math.inf

    def bounds(self, now: float) -> tuple[float, float]:
        """The window holding ``now``: UTC multiples of ``per``, or local days in ``tz``."""
        if self.zone is None:
            start = math.floor(now / self.per) * self.per
            return start, start + self.per
        local = datetime.fromtimestamp(now, self.zone)
        midnight = datetime.combine(local.date(), dtime(0), tzinfo=self.zone).timestamp()
        if self.per < DAY:
            start = midnight + math.floor((now - midnight) / self.per) * self.per
            return start, min(start + self.per, self._midnight_after(local))
        days = round(self.per / DAY)
        ordinal = local.date().toordinal()
        first = datetime.fromordinal(ordinal - ordinal % days)
        start_day = first.replace(tzinfo=self.zone)
        end_day = (first + timedelta(days=days)).replace(tzinfo=self.zone)
        return start_day.timestamp(), end_day.timestamp()

    def _midnight_after(self, local: datetime) -> float:
        tomorrow = local.date() + timedelta(days=1)
        return datetime.combine(tomorrow, dtime(0), tzinfo=self.zone).timestamp()

    def _roll(self, now: float) -> None:
        if now >= self.end or now < self.start:
            self.start, self.end = self.bounds(now)
            self.used = self.held + (self.charged if self.start <= self.charged_until else 0)

    def charge(self, weight: int, until: float) -> None:
        """Count ``weight`` in this window and in each one that begins by ``until``: sends a killed
        process may have made, which the vendor may stamp in any of them."""
        self.charged += weight
        self.charged_until = max(self.charged_until, until)
        if self.start <= until:
            self.used += weight

    def earliest(self, weight: int, now: float) -> float:
        self._roll(now)
        return now if self.used + weight <= self.rate else self.end

    def hold(self, weight: int) -> None:
        """Count an admitted request that is on its way (the caller has rolled to ``now``)."""
        self.used += weight
        self.held += weight

    def settle(self, weight: int, answered: float) -> None:
        """The answer began at ``answered``: a window that began meanwhile has counted it already."""
        if answered >= self.end:
            self._roll(answered)
        self.held -= min(weight, self.held)

    def reset_time(self, now: float) -> float:
        self._roll(now)
        return self.end


class Slots:
    """A concurrency cap: how many admitted tasks have not been released yet."""

    __slots__ = ("spec", "cap", "active")

    def __init__(self, spec: Concurrency) -> None:
        self.spec = spec
        self.cap = spec.cap
        self.active = 0

    def earliest(self, weight: int, now: float) -> float:
        """``now`` while a slot is free, else ``inf`` (until one is released)."""
        return now if self.active < self.cap else math.inf


class Lease:
    """Until when the limiter's budgets hold (``active`` once a lease was saved; without one, no
    state and no probe is limited by budgets)."""

    __slots__ = ("active", "until", "starved")

    def __init__(self) -> None:
        self.active = False
        self.until = math.inf
        self.starved = False  # a scope used its whole allowance: it waits for the next lease


class Budget:
    """What a scope may still admit before the next durable save of its usage (a lease). A
    process killed at any instant has admitted, beyond its last saved usage, at most its
    allowance: so a restarted one knows an upper bound of what its predecessor sent and never
    sends past a window that predecessor filled."""

    __slots__ = ("lease", "allowance", "remaining")

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.allowance: float = math.inf
        self.remaining: float = math.inf

    @property
    def spent(self) -> float:
        return self.allowance - self.remaining

    def earliest(self, weight: int, now: float) -> float:
        """``now`` while the lease has room, else ``inf`` (until the next save renews it)."""
        lease = self.lease
        if not lease.active:
            return now
        return now if self.remaining >= weight and now < lease.until else math.inf


Counter = Union["Sliding", "Clock", Slots, Budget]  # what one limit counts; ``earliest(weight, now)`` on each


def merge_log(quota: Sliding, entries: Iterable[Sequence[float]], now: float) -> None:
    fresh = Sliding(quota.spec, quota.span - quota.spec.per)
    merged = sorted(quota.log() + [(min(float(t), now), int(w)) for t, w in entries])
    for sent, weight in merged:
        fresh.add(weight, sent)
    fresh._evict(now)
    quota.expiries, quota.weights = fresh.expiries, fresh.weights
    quota.used = fresh.used + quota.held  # requests in flight stay held
    quota.last_sent = fresh.last_sent
