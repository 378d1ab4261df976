"""Progress per plan, run and job: counts, rate, and an ETA that knows the rate limits.

``Progress`` only observes events (it never steers). The ETA is the longer of two times: the
remaining work at the observed pace, and the least time the plan's quotas need to admit it
(what each window has left goes at once, the rest at the window's rate, so a burst at the start
of a sliding window is not taken for a pace that lasts, and a daily quota with room to spare
does not slow the estimate). Before any task finished, the limits alone give the ETA.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .events import Event, FreezeEvent, KeyEvent, PlanEvent, SkipEvent, StreamEvent, TaskEvent

__all__ = ["Progress", "PlanProgress"]

_ENDS = frozenset({"completed", "failed", "cancelled"})
PACE_WINDOW = 10.0  # seconds of completions the observed pace is measured over
_SLICE = 0.1  # the pace counts completions per tenth of a second: memory stays flat at any rate


class _Pace:
    """How many things happened in the last ``PACE_WINDOW`` seconds, counted in slices of
    ``_SLICE``: at most about a hundred counters, however many millions of tasks finish."""

    __slots__ = ("_slices",)

    def __init__(self) -> None:
        self._slices: deque[list[int]] = deque()  # [slice number, count]

    def add(self, at: float, n: int = 1) -> None:
        number = int(at // _SLICE)
        slices = self._slices
        if slices and slices[-1][0] == number:
            slices[-1][1] += n
        else:
            slices.append([number, n])
            oldest = int((at - PACE_WINDOW) // _SLICE)
            while slices and slices[0][0] < oldest:
                slices.popleft()

    def count(self, now: float) -> int:
        """Things in the slices that end after ``now - PACE_WINDOW``."""
        slices = self._slices
        oldest = int((now - PACE_WINDOW) // _SLICE)
        while slices and slices[0][0] < oldest:
            slices.popleft()
        return sum(n for _, n in slices)

    def clear(self) -> None:
        self._slices.clear()


@dataclass
class PlanProgress:
    """One plan's counters; ``rate`` is tasks per second, ``eta`` seconds (None: unknown)."""

    plan: str
    state: str = "idle"
    run_id: str | None = None
    total: int | None = None
    done: int = 0
    failed: int = 0
    skipped: int = 0
    in_flight: int = 0
    retries: int = 0
    freezes: int = 0
    rows: int = 0
    messages: int = 0  # received by stream tasks
    frozen_until: float | None = None
    limit_time: Callable[[int, float], float] | None = field(default=None, repr=False)
    rate: float = 0.0  # tasks per second; for a stream plan, messages per second
    eta: float | None = None
    last_message: str | None = None
    last_message_at: float = 0.0
    last_failure: str | None = None  # why the last failed task failed
    started_at: float | None = None
    ended_at: float | None = None  # when the run ended (its rate is then its average)
    carried: int = 0  # tasks finished before this process that its run skips: already counted
    rows_before: int = 0  # rows the run wrote before this process took it up
    _finished: _Pace = field(default_factory=_Pace, repr=False)  # tasks done or failed
    _streamed: _Pace = field(default_factory=_Pace, repr=False)  # stream messages

    @property
    def remaining(self) -> int | None:
        if self.total is None:
            return None
        return max(self.total - self.done - self.failed - self.skipped, 0)


class Progress:
    """Counts events per plan and computes rates and ETAs on demand (``snapshot``)."""

    def __init__(self) -> None:
        self.plans: dict[str, PlanProgress] = {}

    def set_limit_time(self, plan: str, limit_time: Callable[[int, float], float] | None) -> None:
        """How the plan's limits bound its ETA: ``limit_time(tasks, now)`` is the least time its
        quotas need to admit that many more tasks (None: no limits)."""
        self._plan(plan).limit_time = limit_time

    def started(self, plan: str) -> None:
        """A task of ``plan`` went in flight (what a "started" ``TaskEvent`` tells)."""
        self._plan(plan).in_flight += 1

    def ended(self, plan: str, kind: str, at: float, message: str | None = None, rows: int = 0,
              more: int = 0) -> None:
        """A task of ``plan`` came back (what a ``TaskEvent`` of any kind but "started" tells)."""
        p = self._plan(plan)
        p.in_flight = max(p.in_flight - 1, 0)
        if kind == "done":
            p.done += 1
            p.rows += rows
            if more and p.total is not None:
                p.total += more
            p._finished.add(at)
        elif kind == "failed":
            p.failed += 1
            p._finished.add(at)
            p.last_message = p.last_failure = message
            p.last_message_at = at
        elif kind == "retry":
            p.retries += 1
            p.last_message, p.last_message_at = message, at

    def recall(self, plan: str, state: str, run_id: str, counts: dict[str, Any], carried: int = 0) -> None:
        """Take up a run another process began (or a plan's last run, after a restart) with the
        counts it recorded; its next ``carried`` skips are tasks those counts already hold."""
        p = self._plan(plan)
        p.state, p.run_id, p.total = state, run_id, counts.get("total")
        p.done, p.failed, p.skipped = counts.get("done", 0), counts.get("failed", 0), counts.get("skipped", 0)
        p.rows, p.retries, p.freezes = counts.get("rows", 0), counts.get("retries", 0), counts.get("freezes", 0)
        p.last_message = p.last_failure = counts.get("message")
        p.carried, p.started_at, p.rows_before = carried, None, p.rows
        p._finished.clear()
        p._streamed.clear()

    def counts(self, plan: str) -> dict[str, Any]:
        """What a run record keeps of the plan's run: its counts and its last failure."""
        p = self._plan(plan)
        return {"done": p.done, "failed": p.failed, "skipped": p.skipped, "rows": p.rows, "retries": p.retries,
                "freezes": p.freezes, "total": p.total, "message": p.last_failure}

    def observe(self, event: Event) -> None:
        p = self._plan(event.plan)
        if isinstance(event, TaskEvent):
            if event.kind == "started":
                p.in_flight += 1
            else:
                self.ended(event.plan, event.kind, event.at, event.message, event.rows, event.more)
        elif isinstance(event, PlanEvent):
            if event.state in ("running", "paused", "stopped") and event.run_id and event.run_id != p.run_id:
                p.done = p.failed = p.skipped = p.retries = p.freezes = p.rows = p.messages = p.carried = 0
                p.rows_before = 0
                p.last_failure = None
                p._finished.clear()
                p._streamed.clear()
                p.started_at = event.at
            elif event.state == "running" and p.started_at is None:
                p.started_at = event.at
            p.ended_at = event.at if event.state in _ENDS else None
            p.state = event.state
            p.run_id = event.run_id or p.run_id
            if event.total is not None:
                p.total = event.total
            if event.message:
                p.last_message, p.last_message_at = event.message, event.at
        elif isinstance(event, FreezeEvent):
            p.freezes += event.new
            p.frozen_until = event.until
            p.last_message, p.last_message_at = event.message, event.at
        elif isinstance(event, KeyEvent):
            p.last_message, p.last_message_at = event.message, event.at
        elif isinstance(event, SkipEvent):
            known = min(p.carried, event.count)
            p.carried -= known
            p.skipped += event.count - known
            if event.total is not None:
                p.total = event.total
        elif isinstance(event, StreamEvent):
            p.messages += event.messages
            p.rows += event.rows
            p._streamed.add(event.at, event.messages)

    def snapshot(self, plan: str, now: float) -> PlanProgress:
        """The plan's progress at ``now`` with ``rate`` and ``eta`` filled in."""
        p = self._plan(plan)
        # At least a second: 25 tasks done in the first 0.3 s are 25 per second, not 83.
        span = max(min(PACE_WINDOW, now - p.started_at), 1.0) if p.started_at is not None else PACE_WINDOW
        # A stream plan is one long task: its pace is messages per second, not tasks.
        count = p._streamed.count(now) if p.messages else p._finished.count(now)
        p.rate = count / span if span > 0 else 0.0
        if p.ended_at is not None and p.started_at is not None and not p.messages:
            # An ended run's rate is its average: a pace that kept falling after the end would mislead.
            p.rate = max(p.done + p.failed - p.carried, 0) / max(p.ended_at - p.started_at, 1.0)
        if p.frozen_until is not None and p.frozen_until <= now:
            p.frozen_until = None
        p.eta = self._eta(p, now)
        return p

    def _eta(self, p: PlanProgress, now: float) -> float | None:
        remaining = p.remaining
        if remaining is None:
            return None
        if remaining == 0:
            return 0.0
        if p.messages:
            return None  # a stream's rate is in messages, and how many are to come is its own affair
        by_pace = remaining / p.rate if p.rate > 0 else 0.0
        by_limits = 0.0
        if p.limit_time is not None:
            try:
                by_limits = p.limit_time(remaining, now)
            except KeyError:  # its dataset was removed meanwhile
                by_limits = 0.0
        if by_pace == 0.0 and by_limits == 0.0:
            return None  # no pace yet, and no limit that says how long
        if by_limits > 0.0 and p.started_at is not None:
            # A young run's pace is a few noisy seconds: lean on what its limits allow until
            # PACE_WINDOW seconds of pace are in, then on the pace (never below the limits).
            trust = min(max(now - p.started_at, 0.0) / PACE_WINDOW, 1.0)
            by_pace = trust * by_pace + (1.0 - trust) * by_limits
        wait = max(p.frozen_until - now, 0.0) if p.frozen_until is not None else 0.0
        return wait + max(by_pace, by_limits)

    def _plan(self, plan: str) -> PlanProgress:
        p = self.plans.get(plan)
        if p is None:
            p = self.plans[plan] = PlanProgress(plan)
        return p
