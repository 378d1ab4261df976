"""Learning a vendor's limits from its answers, for vendors whose limits nobody wrote down.

A ``LimitLearner`` keeps one scope's learned limits. Best source first:

- the vendor's own statement (``RateLimit-Policy: 50;w=1``, every form ``connectors.headers``
  reads; Tushare's message): adopted at once (``stated``);
- a refusal (429, a quota message) with the time room comes back (``Retry-After``): the window
  is the one that explains when room came back, the quota what was sent in it (``refused``);
- a careful probe until either: a few requests a second, one in flight, twice as fast each time
  the room it was given has been used and answered clean (``clean``); requests in flight
  stay just enough for that pace (Little's law on the answers' latency), so the first refusal
  comes from a small overshoot and few requests are in flight when it comes.

A vendor that raises a limit it never states is found out by trying a little more (10%, then
20%, 40%...) after ten minutes of using a learned limit in full, clean; a try the vendor refuses
costs one refusal and the next waits twice as long (up to a day).

Pure: time is an argument, the send log is the learner's own (fixed memory), and the limits it
says to use (``limits``) are plain ``Quota`` and ``Concurrency`` values for the limiter. A learned limit never
exceeds the configured ``cap``.
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, bisect_right, insort
from collections import deque
from dataclasses import dataclass
from typing import Any

from .units import format_duration
from .windows import Concurrency, Limit, Quota

__all__ = ["LimitLearner", "Learned", "WINDOWS", "parse_rate"]

WINDOWS = (1.0, 10.0, 60.0, 3600.0, 86400.0)  # the windows vendors use, shortest first
PROBE_START = Quota(2, 1.0)  # where a probe begins: two a second
PROBE_GROWTH = 2.0  # each clean stretch lets the probe send this much faster
PROBE_USED = 0.8  # the share of the probe's room used (answered clean) before it grows
PROBE_SLACK = 1.5  # requests in flight while probing: this times the probe's rate times the latency
LATENCY_SAMPLES = 15  # answers the latency is the median of (a stall of a few, as Ray's first calls, moves it little)
RETRY_MORE = 600.0  # seconds a learned limit must be used in full, clean, before a little more is tried
RETRY_MORE_MAX = 86400.0  # the longest wait between tries (doubled after each try the vendor refused)
MORE_STEP = 0.1  # the first try asks this much more (doubled after each the vendor took)
FIT_SLACK = 1.0  # seconds a window's room may miss the wait a vendor said and still be taken as it
CLOCK_TELLS = 0.5  # seconds a clock window must fit a wait better than the sliding one to be learned
MAX_LOG = 200_000  # send times kept (the longest window a refusal can be explained by within them)


@dataclass(frozen=True)
class Learned:
    """A limit learned for a scope: the quota, where it came from, and when."""

    limit: Quota
    source: str  # "the RateLimit-Policy header", "3 answers 429"...
    at: float
    how: str = "stated"  # "stated", "refused" or "trying" (more than held, on trial): a bounded word for metrics

    def describe(self) -> str:
        """``learned: 50 per 1s (from the RateLimit-Policy header)``."""
        return f"learned: {self.limit} (from {self.source})"

    def record(self) -> dict[str, Any]:
        return {"rate": self.limit.rate, "per": self.limit.per, "clock": self.limit.clock, "tz": self.limit.tz,
                "source": self.source, "at": self.at, "how": self.how}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Learned:
        limit = Quota(int(record["rate"]), float(record["per"]), bool(record.get("clock")), record.get("tz"))
        source = str(record.get("source") or "an earlier run")
        how = record.get("how") or ("refused" if source.startswith("answers refused") else "stated")
        return cls(limit, source, float(record.get("at") or 0.0), str(how))


def parse_rate(text: str) -> Quota:
    """``"50 per 1s"`` (or ``"50/1s"``) as a sliding ``Quota``; ``ValueError`` with the form to use."""
    from .units import parse_duration

    rate, sep, per = text.replace("/", " per ").partition(" per ")
    try:
        if not sep:
            raise ValueError
        return Quota(int(rate.strip()), parse_duration(per.strip()))
    except (ValueError, TypeError):
        raise ValueError(f"write a rate as 'N per DURATION', like '50 per 1s' (got {text!r})") from None


class LimitLearner:
    """One scope's learned limits. Tell it what was sent (``sent``), what came back clean
    (``clean``), what the vendor stated (``stated``) and refused (``refused``); ask it what to
    use (``limits``), which changes only on those calls (they return True when it did)."""

    def __init__(self, cap: Quota | None = None, start: Quota = PROBE_START,
                 learned: list[Learned] | None = None) -> None:
        self.cap = cap
        self.start = start
        self.learned: dict[float, Learned] = {}  # window (seconds) -> what was learned for it
        for item in learned or ():
            self.learned[item.limit.per] = item
        self.probe: Quota | None = None if self.learned else start
        self.refusals = 0
        self.learned_at = -math.inf  # when the limits last changed (refusals of older sends teach nothing)
        self._times: list[float] = []  # send times, oldest first (``_head`` onward are live)
        self._head = 0
        self._dropped = 0  # sends compacted out of ``_times`` (tickets count them)
        self._explained: float | None = None  # when the refused request last explained went
        self._episode_since = -math.inf  # what that explanation counted admitted requests from
        self._grown_at = -math.inf  # when the probe last grew
        self._added = start.rate  # the room that added (the first step: all of it)
        self._answered = 0  # requests sent since then that came back clean
        self._held = False  # a refusal is on its way to be explained: the probe grows no more
        self.latency: float | None = None  # the median send-to-answer time lately (how many may be in flight)
        self._took: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._slots = 1  # requests that may be in flight while probing
        self._steady_since: float | None = None  # since when the learned limits held clean (None: no answer yet)
        self._trying: dict[float, Learned] = {}  # window -> what held before a try of more
        self._retry_more = RETRY_MORE
        self._step = MORE_STEP

    # --- what happened ---------------------------------------------------------------------
    def sent(self, now: float, weight: int = 1) -> int:
        """A request went at ``now``; returns its ticket (give it to ``refused`` if it is)."""
        for _ in range(weight):
            self._times.append(now)
        ticket = self._dropped + len(self._times) - 1
        if len(self._times) - self._head > MAX_LOG:
            self._head = len(self._times) - MAX_LOG
        if self._head > 4096 and self._head * 2 > len(self._times):
            del self._times[:self._head]
            self._dropped += self._head
            self._head = 0
        return ticket

    def reached(self, admitted: float, at: float, weight: int = 1) -> None:
        """The request admitted at ``admitted`` reached the vendor at about ``at`` (a Ray node may
        send it seconds later under load; its answer began then): it is counted then, as the
        vendor counted it, so what a refusal found is read in the vendor's order."""
        times, head = self._times, self._head
        for _ in range(weight):
            i = bisect_left(times, admitted, head)
            if i == len(times) or times[i] != admitted:
                return  # older than the log keeps
            del times[i]
            insort(times, at, lo=head)

    def clean(self, now: float, sent_at: float | None = None) -> bool:
        """The request sent at ``sent_at`` came back at ``now`` without a refusal: a probe that
        has used the room it was given grows; one whose answers got slower lets more be in
        flight. True when the limits changed."""
        if sent_at is not None and now >= sent_at:
            self._took.append(now - sent_at)
            self.latency = statistics.median(self._took)
        if self.probe is None:
            return self._try_more(now)
        slots = self._slots
        if self._needed() > slots:  # answers got slower: the pace needs more in flight (never fewer here)
            self._slots = self._needed()
        if sent_at is None or sent_at >= self._grown_at:
            self._answered += 1
        # It grows once it has used what it was given: its window holds nearly its rate, and
        # the room its last step added has been used and answered clean since (a step is tried,
        # then the next: at a long latency, the answers are waited for, not just the sends).
        if self._held or self._count(now - self._span(self.probe), now) < self.probe.rate * PROBE_USED:
            return self._slots != slots
        if self._answered < self._added * PROBE_USED:
            return self._slots != slots
        grown = max(self.probe.rate + 1, math.floor(self.probe.rate * PROBE_GROWTH))
        if self.cap is not None:
            grown = min(grown, math.floor(self.cap.rate * self.probe.per / self.cap.per) or 1)
        if grown <= self.probe.rate:
            return self._slots != slots
        self._added, self._grown_at, self._answered = grown - self.probe.rate, now, 0
        self.probe = Quota(grown, self.probe.per)  # (a refusal of what went before still teaches)
        self._slots = self._needed()
        return True

    def hold(self) -> None:
        """A refusal came and is explained later (``refused``): the probe grows no more meanwhile."""
        self._held = True

    def in_flight(self) -> int:
        """How many requests may be in flight while probing: one until answers say how long they
        take, then what the probe's pace needs at that latency, and a half more (Little's law)."""
        return self._slots

    def _span(self, limit: Quota) -> float:
        """How long the limiter holds a request against ``limit``: its window, from the answer
        (so in a window's time it admits rate x per / (per + latency), not the whole rate)."""
        return limit.per + (self.latency or 0.0)

    def _needed(self, limit: Quota | None = None) -> int:
        """What a pace of ``limit`` (the probe's) needs in flight at the latency seen, and a half more."""
        limit = limit or self.probe
        if limit is None or self.latency is None:
            return 1
        return max(1, math.ceil(limit.rate / limit.per * self.latency * PROBE_SLACK))

    def stated(self, rate: int, per: float, now: float, source: str) -> bool:
        """The vendor says its limit: ``rate`` per ``per`` seconds. Adopted at once."""
        if rate < 1 or not (per > 0):
            return False
        limit = self._capped(Quota(rate, per))
        known = self.learned.get(per)
        if known is not None and known.limit == limit:
            return False
        self.learned[per] = Learned(limit, source, now)
        self._trying.pop(per, None)
        self.probe = None
        self.learned_at = now
        self._steady_since = now
        return True

    def refused(self, now: float, sent_at: float, retry_after: float | None, source: str,
                ticket: int | None = None, admitted: float | None = None) -> bool:
        """The request sent at ``sent_at`` (``ticket``: which of those sent then; ``admitted``:
        when it was admitted, if earlier) was refused at ``now``; room comes back ``retry_after``
        seconds later (None: not said). Learn the window and quota that explain it. Answers come
        back out of order: a refused request sent before the one last explained is a tighter
        reading of the same overshoot."""
        self.refusals += 1
        self._held = False
        earlier = self._explained is not None and sent_at < self._explained
        if (sent_at if admitted is None else admitted) < self.learned_at and not earlier:
            return False  # sent before the limits changed (in flight then): what it says is known
        since = self._episode_since if earlier else (self.learned_at if self.learned else -math.inf)
        lowered = None if earlier else self._lowered(sent_at, ticket, retry_after)
        if lowered is not None:  # refused while within a learned limit that was nearly full
            window, quota, clock = lowered
        else:
            window, quota, clock = self.explain(sent_at, now, retry_after, ticket, since)
        limit = self._capped(Quota(max(quota, 1), window, clock))
        known = self.learned.get(window)
        if earlier:
            if known is None or limit.rate >= known.limit.rate:
                return False
        elif known is not None and known.limit.rate <= limit.rate:
            # Refused under what was learned: the vendor counts more than we do, or lowered its limit.
            limit = Quota(max(1, min(limit.rate, known.limit.rate - 1)), window, clock)
        times = "once" if self.refusals == 1 else f"{self.refusals} times"
        if self._trying:  # more was tried and refused: back to what held, and wait longer to try again
            self._retry_more = min(self._retry_more * 2, RETRY_MORE_MAX)
            self._step = MORE_STEP
            held = self._trying.pop(window, None)
            self.learned.update(self._trying)
            self._trying.clear()
            if held is not None and held.limit.rate > limit.rate:
                limit = held.limit  # (what held for a whole stretch is known good)
        self.learned[window] = Learned(limit, f"answers refused ({source}, {times})", now, "refused")
        self.probe = None
        self._explained, self._episode_since = sent_at, since
        self.learned_at = now
        self._steady_since = now
        return True

    def _try_more(self, now: float) -> bool:
        """After a long stretch of using a learned limit in full with no refusal, ask for a
        little more of the one that binds (the vendor may have raised it without saying)."""
        if self._steady_since is None:
            self._steady_since = now
            return False
        stretch = self._retry_more
        if now - self._steady_since < stretch:
            return False
        binding, fullest = None, 0.0
        for per, item in self.learned.items():
            if per * 10 > stretch:
                continue  # too long a window to tell it is used in full
            used = self._count(now - stretch, now) / (item.limit.rate * stretch / self._span(item.limit))
            if used > fullest:
                binding, fullest = item, used
        self._steady_since = now
        if binding is None or fullest < 0.8:
            return False  # not what holds the work back: nothing to learn by asking for more
        if self._trying:  # the last try held: keep it, and ask for more next time
            self._trying.clear()
            self._step = min(self._step * 2, 1.0)
            self._retry_more = RETRY_MORE
        limit = binding.limit
        more = self._capped(Quota(max(limit.rate + 1, math.floor(limit.rate * (1 + self._step))), limit.per,
                                  limit.clock, limit.tz))
        if more.rate <= limit.rate:
            return False
        self._trying[limit.per] = binding
        self.learned[limit.per] = Learned(more, f"trying more: {limit} held, clean, for "
                                                f"{format_duration(stretch)}", now, "trying")
        self.learned_at = now
        return True

    def _lowered(self, sent_at: float, ticket: int | None, retry_after: float | None) -> tuple[float, int, bool] | None:
        """The learned window a refusal within every learned limit points at: the shortest whose
        room comes back within it (``retry_after``); the vendor lowered it (or counts more than
        we do) to what the refused request found in it."""
        end = self._end(sent_at, ticket)
        for per, item in sorted(self.learned.items()):
            if retry_after is not None and retry_after > per + 1.0:
                continue
            found, _ = self._found(per, sent_at, end, item.limit.clock, end)
            if 0 < found <= item.limit.rate:
                return per, min(found, item.limit.rate - 1), item.limit.clock
        return None

    def _end(self, sent_at: float, ticket: int | None) -> int:
        """The index of the refused send (its ticket says which of a burst's it was; without
        one, the first of those sent at that instant)."""
        times, head = self._times, self._head
        if ticket is not None and head <= ticket - self._dropped < len(times):
            return ticket - self._dropped
        return bisect_left(times, sent_at, head)

    def explain(self, sent_at: float, now: float, retry_after: float | None,
                ticket: int | None = None, since: float = -math.inf) -> tuple[float, int, bool]:
        """The (window, quota, clock-aligned) that explains a refusal of the request sent at ``sent_at``.

        Under a window of W holding Q, every request admitted before found fewer than Q sent in
        the W before it (sliding), or in its own stretch of W (a clock window), and the refused one
        found Q. A window explains the refusal when the refused request found more than any
        admitted one did; its quota is then the most any admitted one found, plus itself. Of the
        windows that explain it, the one whose room comes back when the vendor said it would
        (``retry_after``, whole seconds rounded up) wins; without a wait, the shortest."""
        times, head = self._times, self._head
        end = self._end(sent_at, ticket)  # the sends before the refused one
        # The admitted requests that count are those ``since`` the limits were last learned (a
        # vendor that lowered its limit admitted more before).
        first = bisect_left(times, since, head, end) if since > -math.inf else head
        best: tuple[float, float, int, bool] | None = None  # (error, window, quota, clock)
        fits: tuple[float, float, int, bool] | None = None  # the same, of any window (explaining or not)
        fitting: list[tuple[float, float, int, bool]] = []  # every window's (error, window, quota, clock)
        sliding: dict[float, float] = {}  # window -> how far its sliding reading misses the wait
        for window in WINDOWS:
            for clock in (False, True):
                found, peak = self._found(window, sent_at, end, clock, first)
                if found == 0:
                    continue
                explains = peak < found  # else an admitted request found as many
                if retry_after is None:
                    if explains:  # (a clock window is not told from a sliding one without a wait)
                        return window, peak + 1, False
                    continue
                # The vendor said its wait at some instant between the send and the answer: the
                # window fits when its room, seen from one of those instants, is the wait said.
                if clock:
                    error = min(_miss(math.floor(at / window) * window + window - at, retry_after)
                                for at in (sent_at, now))
                else:
                    back = times[bisect_right(times, sent_at - window, head)] + window
                    error = _miss(back - now, retry_after, back - sent_at)
                    sliding[window] = error
                if explains and (best is None or error < best[0] - 1e-6):
                    best = (error, window, peak + 1, clock)
                fitting.append((error, window, min(found, peak + 1), clock))
                if fits is None or error < fits[0] - 1e-6:
                    fits = fitting[-1]
        # A window that explains the refusal but not its wait (requests reach the vendor in
        # another order than they left, as from several nodes): the wait said is the surer
        # sign; the quota is what the refused request found (a lower one is learned if refused again).
        chosen = None
        if best is not None and (fits is None or best[0] <= FIT_SLACK or best[0] <= fits[0]):
            chosen = best
        elif fits is not None:
            # A wait in whole seconds cannot tell apart windows whose room it fits within a second
            # of each other: take the shortest (a longer clock window that happened to end then
            # would be learned as a far slower limit); if it is too loose, the next refusal says so.
            close = [c for c in fitting if c[0] <= fits[0] + FIT_SLACK]
            error, window, quota, clock = min(close, key=lambda c: (c[1], c[0]))
            chosen = error, window, max(quota, 1), clock
        if chosen is not None:
            error, window, quota, clock = chosen
            # A clock window is learned only when the wait tells it from the sliding one (the
            # room a clock window gives back at its boundary); else the sliding window of the
            # same quota, which holds under either (noisy send times can make either explain).
            if clock and sliding.get(window, math.inf) - error < CLOCK_TELLS:
                clock = False
            return window, quota, clock
        return WINDOWS[0], max(end - bisect_right(times, sent_at - WINDOWS[0], head), 1), False

    def _found(self, window: float, sent_at: float, end: int, clock: bool, since: int) -> tuple[int, int]:
        """What the refused request found in ``window`` before it, and the most an earlier one
        (from index ``since``) did."""
        times, head = self._times, self._head
        if clock:
            start = math.floor(sent_at / window) * window
            found = end - bisect_left(times, start, head)
        else:
            found = end - bisect_right(times, sent_at - window, head)
        peak, lo = 0, head
        for i in range(since, end):
            t = times[i]
            if clock:
                if math.floor(t / window) != math.floor(times[lo] / window):
                    lo = bisect_left(times, math.floor(t / window) * window, lo, i + 1)
            else:
                while times[lo] <= t - window:
                    lo += 1
            if i - lo > peak:
                peak = i - lo
        return found, peak

    # --- what to use ------------------------------------------------------------------------
    def limits(self) -> list[Limit]:
        """The limits to admit requests under now: what was learned, or the probe (a quota and
        how many may be in flight)."""
        if self.probe is not None:
            return [self.probe, Concurrency(self.in_flight())]
        learned: list[Limit] = [item.limit for item in sorted(self.learned.values(), key=lambda i: i.limit.per)]
        if self._trying:  # trying more: only what that pace needs in flight, so a refusal finds few
            learned.append(Concurrency(max(self._needed(self.learned[per].limit) for per in self._trying)))
        return learned

    def describe(self) -> str:
        if self.probe is not None:
            return f"learning: probing at {self.probe}, {self.in_flight()} in flight"
        return "; ".join(item.describe() for item in sorted(self.learned.values(), key=lambda i: i.limit.per))

    def records(self) -> list[dict[str, Any]]:
        """What to keep: what held (a try of more is kept only once it has held too)."""
        return [self._trying.get(per, item).record() for per, item in self.learned.items()]

    def recent(self, window: float, now: float) -> int:
        """Sends in the last ``window`` seconds (to seed a newly learned quota with them)."""
        return self._count(now - window, now)

    # --- helpers ----------------------------------------------------------------------------
    def _capped(self, limit: Quota) -> Quota:
        if self.cap is None:
            return limit
        allowed = math.floor(self.cap.rate * limit.per / self.cap.per) if limit.per <= self.cap.per else self.cap.rate
        return limit if limit.rate <= allowed else Quota(max(allowed, 1), limit.per, limit.clock, limit.tz)

    def _count(self, start: float, end: float, *, right_open: bool = False) -> int:
        """Sends in [start, end] (or [start, end))."""
        times, head = self._times, self._head
        hi = bisect_left(times, end, head) if right_open else bisect_right(times, end, head)
        return max(hi - bisect_left(times, start, head), 0)


def _miss(room: float, retry_after: float, room_late: float | None = None) -> float:
    """How far the room from ``room`` to ``room_late`` falls outside the wait a vendor said (a
    Retry-After in whole seconds means (r - 1, r]); 0 when they meet."""
    low = retry_after - 1.0 if retry_after >= 1.0 and retry_after == int(retry_after) else retry_after
    late = room if room_late is None else room_late
    if late < low:
        return low - late
    return max(room - retry_after, 0.0)
