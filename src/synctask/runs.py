"""Runs and schedules: when each plan is next due, and what starting and ending a run means.

A run is one execution of a plan at a logical time (now for a manual start, the due instant for
a scheduled one). Starting it binds the plan's grid to that time, hands its tasks to the
scheduler with a way to skip the ones already done, and records the run; a manual plan whose
last run did not finish continues that run. Ending it records how it ended and tells whoever
waits for it (a job).

Schedules leave no gaps. The due times a plan missed while nothing ran (the process was down)
are run when it starts, oldest first, each with its own logical time (``catchup``: all of them,
the latest, or none), and a run the process left unfinished is finished first. A due time that
comes while the plan's previous run still goes waits for it to end (``overlap = "queue"``), or
is skipped (``"skip"``).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .events import PlanEvent
from .grid import BoundGrid
from .incremental import Cursors
from .lanes import RunKey
from .model import PlanState, RunState, SyncPlan
from .progress import Progress
from .scheduler import Scheduler
from .store import RunRecord, Store, recounted

__all__ = ["Runs", "Run", "RunSummary"]

MAX_CATCH_UP = 1_000  # missed due times run at most per plan (an "every 1s" plan down for a day has 86,400)
DONE_IN_MEMORY = 500_000  # finished ids kept in a set to skip them (about 50 MB at most); above, the store answers
_GOING = (PlanState.RUNNING, PlanState.PAUSED, PlanState.STOPPED)
_HOLDING = (*_GOING, PlanState.FAILED)
_ENDED_RUNS = ("completed", "failed", "cancelled")  # a scheduled plan's next run waits while its run is in one of these


@dataclass
class RunSummary:
    """What ``run()`` did: per plan counts, whether it was interrupted, what to type to resume."""

    interrupted: bool = False
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: str | None = None  # why the run had to end at once (the state could not be written)
    problems: list[str] = field(default_factory=list)  # sinks that could not be closed


@dataclass
class Run:
    id: str
    plan: str
    logical_time: datetime


class Runs:
    """Each plan's current run and next due time. It starts runs in the scheduler and records
    them in the store; ``store`` is asked for lazily (a state file opens on first need)."""

    def __init__(self, scheduler: Scheduler, progress: Progress, cursors: Cursors, store: Callable[[], Store],
                 emit: Callable[[PlanEvent], None], clock: Callable[[], float],
                 storing: Callable[[], AbstractContextManager[None]]) -> None:
        self.scheduler = scheduler
        self.progress = progress
        self.cursors = cursors
        self._store = store
        self._storing = storing  # around writes that may fail on a full disk (see ``delivery``)
        self._emit = emit
        self._clock = clock
        self.current: dict[str, Run] = {}
        self.due: dict[str, datetime] = {}
        self.waiters: dict[str, asyncio.Future[str]] = {}  # a job waits for its run to end
        self.backlog: dict[str, deque[datetime]] = {}  # due times waiting for the plan's run to end
        self._plans: dict[str, SyncPlan] = {}  # the scheduled plans
        self._to_catch_up: list[str] = []  # scheduled plans whose missed due times are not looked for yet
        self._ended: dict[str, PlanState] = {}  # how a plan's last run ended, when none goes in this process

    def run_id(self, plan: str) -> str | None:
        run = self.current.get(plan)
        return run.id if run else None

    def __iter__(self) -> Iterator[Run]:
        return iter(list(self.current.values()))

    # --- schedules -----------------------------------------------------------------------
    def schedule(self, plan: SyncPlan, now: datetime) -> None:
        """Keep the plan's next due time; the ones it missed are looked for on the first turn
        (the state may not be open yet)."""
        if plan.schedule.kind == "manual":
            return
        self._plans[plan.name] = plan
        self._to_catch_up.append(plan.name)
        due = plan.schedule.next_due(now)
        if due is not None:
            self.due[plan.name] = due

    def next_due(self, plan: str) -> datetime | None:
        return self.due.get(plan)

    def unschedule(self, plan: str) -> None:
        self._ended.pop(plan, None)
        self.due.pop(plan, None)
        self.backlog.pop(plan, None)
        self._plans.pop(plan, None)

    def run_of(self, plan: str) -> Run | None:
        return self.current.get(plan)

    def forget(self, plan: str) -> None:
        self.due.pop(plan, None)
        self.current.pop(plan, None)
        self._ended.pop(plan, None)

    def state_of(self, plan: str) -> PlanState:
        """Where the plan's run is; with none in this process, how its last run ended (a restarted
        daemon shows a completed plan completed, not idle)."""
        if self.scheduler.has_plan(plan):
            return self.scheduler.plan_state(plan)
        return self._ended.get(plan, PlanState.IDLE)

    def recall(self, plan: str) -> None:
        """Show the plan's last run as it was recorded, when no run of it goes in this process:
        its state (if it ended) and its counts."""
        if self.scheduler.has_plan(plan):
            return
        last = self._store().last_run(plan)
        if last is None:
            return
        ended = last.state in _ENDED_RUNS
        if ended:
            self._ended[plan] = PlanState(last.state)
        self.progress.recall(plan, last.state if ended else "idle", last.id, self._recorded(last))

    def _recorded(self, run: RunRecord) -> dict[str, Any]:
        """A run's counts as recorded: done, failed and rows exact from its outcomes (a stream's
        rows, which no outcome holds until it ends, as last saved), the rest as last saved (a
        kill -9 loses the retries, freezes and skips of the last quarter second)."""
        store = self._store()
        exact = store.run_counts(run.plan, run.id)
        return recounted(run.summary, exact.get("done", 0), exact.get("failed", 0), store.run_rows(run.plan, run.id))

    def next_wake(self) -> float | None:
        """The earliest instant a plan comes due (epoch seconds); at once when a due time waits
        for a run that has just ended."""
        if any(not self._going(name) for name in self.backlog):
            return -math.inf
        return min((due.timestamp() for due in self.due.values()), default=None)

    def start_due(self, plans: dict[str, SyncPlan], at: float) -> None:
        """Start every plan whose time has come by ``at`` (epoch seconds); a due time that comes
        while the previous run still goes is skipped."""
        if self._to_catch_up:
            self._catch_up(datetime.fromtimestamp(at, UTC))
        if self.due:
            now = datetime.fromtimestamp(at, UTC)
            for name, due in list(self.due.items()):
                if due > now:
                    continue
                plan = plans[name]
                nxt = plan.schedule.next_due(due)
                if nxt is None:
                    del self.due[name]
                else:
                    self.due[name] = nxt
                if plan.overlap == "queue" or not self._going(name):
                    self.backlog.setdefault(name, deque()).append(due)  # skipped below if it overlaps
        if self.backlog:
            for name, waiting in list(self.backlog.items()):
                if self._going(name):
                    if self._plans[name].overlap == "skip":
                        waiting.clear()  # the previous run is still going: these due times are skipped
                else:
                    self.start(self._plans[name], waiting.popleft())
                if not waiting:
                    del self.backlog[name]

    def _going(self, name: str) -> bool:
        """Whether the plan's run still goes (or stopped on a fatal error: its due times wait for a
        person to start it again, rather than failing the same way each time)."""
        return self.scheduler.has_plan(name) and self.scheduler.plan_state(name) in _HOLDING

    def _catch_up(self, now: datetime) -> None:
        """The due times each newly scheduled plan missed since its last run (that run first, if
        it did not finish), as its ``catchup`` says, into its backlog."""
        store = self._store()
        names, self._to_catch_up = self._to_catch_up, []
        for name in names:
            plan = self._plans.get(name)
            last = store.last_run(name) if plan is not None else None
            if plan is None or last is None or plan.catch_up == "none":
                continue
            since = datetime.fromisoformat(last.logical_time)
            missed: list[datetime] = []
            if last.state in ("running", "interrupted") and last.id == _run_id(name, since) and not self._going(name):
                missed.append(since)  # a scheduled run left unfinished: again, its done tasks skipped
            due = plan.schedule.next_due(since)
            while due is not None and due <= now and len(missed) < MAX_CATCH_UP:
                missed.append(due)
                due = plan.schedule.next_due(due)
            if plan.catch_up == "latest":
                missed = missed[-1:]
            if missed:
                self.backlog.setdefault(name, deque()).extend(missed)

    # --- starting and ending -------------------------------------------------------------
    def start(self, plan: SyncPlan, logical_time: datetime | None, *, hold: PlanState | None = None,
              only: list[dict[str, Any]] | None = None) -> None:
        """Start (or continue) a run of ``plan``; ``hold`` (paused or stopped): as it was when the
        process that ran it stopped, dispatching nothing until resumed; ``only``: a new run of
        just these tasks' parameters (failed tasks retried one by one)."""
        store = self._store()
        now = self._clock()
        scheduled = logical_time is not None
        logical = logical_time or datetime.fromtimestamp(now, UTC)
        run_key: RunKey = _run_key(logical) if scheduled else None
        last = store.last_run(plan.name)
        if not scheduled and only is None and last is not None and last.state in ("running", "interrupted", "failed"):
            run_id = last.id  # a manual plan continues its unfinished run
        elif scheduled:
            run_id = _run_id(plan.name, logical)
        else:
            run_id = f"{plan.name}:{datetime.fromtimestamp(now, UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"
        grid: Any = plan.params.bind(logical) if only is None else only
        if scheduled and plan.rolling:
            run_key = _rolling_key(grid, plan, _run_key(logical))
        if self.cursors.spec(plan.dataset) is not None:  # cursor sync: each run asks anew, since its cursors
            run_key = run_id.rpartition(":")[2]
            grid = self.cursors.bind(plan.dataset, grid)
        continued = last if last is not None and last.id == run_id else None
        # An interrupted run goes on where it stopped: its failed tasks stay failed (``retry``
        # runs them again); a run a fatal error stopped is resumed to run them again.
        keep_failed = continued is not None and continued.state in ("running", "interrupted")
        done_among = self._skipper(store, plan.name, run_id if keep_failed else None)
        resume = store.follow_up if done_among is not None and store.has_follow_ups(plan.name) else None
        self.scheduler.add_plan(plan, grid, done_among=done_among, run_key=run_key, resume=resume,
                                paused=hold is not None)
        if hold is PlanState.STOPPED:
            self.scheduler.stop_plan(plan.name)
        self.current[plan.name] = Run(run_id, plan.name, logical)
        self._ended.pop(plan.name, None)
        state = hold.value if hold is not None else "running"
        if continued is not None:
            counts = self._recorded(continued)
            if not keep_failed:
                counts["failed"] = 0  # they run again
            carried = counts.get("done", 0) + counts.get("skipped", 0) + counts["failed"]
            self.progress.recall(plan.name, state, run_id, counts, carried)
        store.start_run(RunRecord(run_id, plan.name, logical.isoformat(), now, "running"), keep=plan.history)
        self._emit(PlanEvent(now, plan.name, state, run_id, total=len(grid)))

    @staticmethod
    def _skipper(store: Store, plan: str, run_id: str | None) -> Callable[[list[str]], Collection[str]] | None:
        """How to tell finished tasks, asked about a batch of ids at a time: nothing to check on a
        first run, a set in memory when the plan has up to ``DONE_IN_MEMORY`` finished tasks,
        else the store (one query per batch: bounded memory at any plan size). ``run_id``: the
        tasks that failed in that run count as finished too."""
        store.flush()
        done = store.done_ids(plan, DONE_IN_MEMORY)
        failed = store.failed_ids(plan, run_id) if run_id is not None else set()
        if done is None:
            if failed:
                return lambda ids: store.done_among(ids) | failed.intersection(ids)
            return store.done_among
        finished = done | failed
        return finished.intersection if finished else None

    def end(self, name: str, state: RunState, stats: dict[str, Any] | None, message: str | None = None) -> None:
        """Record how the run ended (``stats`` None: nothing to record, a job) and say so."""
        run = self.current.get(name)
        if run is None:
            return
        now = self._clock()
        if stats is not None:
            with self._storing():
                self._store().end_run(run.id, state.value, now, stats)
        self._emit(PlanEvent(now, name, state.value, run.id, message=message))
        waiter = self.waiters.get(name)
        if waiter is not None and not waiter.done():
            waiter.set_result(state.value)

    def track(self, name: str, run_id: str) -> asyncio.Future[str]:
        """A run that is not the store's (a job's): its end is only told to the returned future."""
        self.current[name] = Run(run_id, name, datetime.fromtimestamp(self._clock(), UTC))
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiters[name] = waiter
        return waiter

    def untrack(self, name: str) -> None:
        self.waiters.pop(name, None)
        self.forget(name)

    def counts_going(self, run_id: str, name: str) -> dict[str, Any] | None:
        """The counts of run ``run_id`` if it is the plan's and still goes (else None: it ended,
        and its record holds its final counts)."""
        run = self.current.get(name)
        if run is None or run.id != run_id or not self.scheduler.has_plan(name) or \
                self.scheduler.plan_state(name) not in _GOING:
            return None
        return self.progress.counts(name)

    def counts(self, name: str) -> dict[str, Any]:
        """The plan's run's counts as its record keeps them (across the processes that ran it)."""
        return self.progress.counts(name)

    def stats(self, name: str) -> dict[str, Any]:
        """The plan's counts in this process."""
        s = self.scheduler.stats(name)
        return {"done": s.done, "failed": s.failed, "skipped": s.skipped, "retries": s.retries,
                "freezes": s.freezes, "total": s.total}

    def summary(self, plans: Iterable[str], summary: RunSummary, rows: Callable[[str], int]) -> RunSummary:
        """``summary`` with each plan's counts, rows and state (one that did not end, after an
        interrupt, is "interrupted": the next run goes on from there)."""
        for name in plans:
            if self.scheduler.has_plan(name):
                state = self.scheduler.plan_state(name).value
                if summary.interrupted and state in ("running", "paused", "stopped"):
                    state = "interrupted"
                summary.plans[name] = {**self.stats(name), "state": state, "rows": rows(name)}
        return summary

    def unfinished(self) -> list[Run]:
        """The runs whose plans still go (running, paused, stopped): interrupted at shutdown."""
        return [run for run in self.current.values()
                if self.scheduler.has_plan(run.plan) and self.scheduler.plan_state(run.plan) in _GOING]


def _rolling_key(grid: BoundGrid, plan: SyncPlan, key: str) -> RunKey:
    """A rolling range's task ids: the run's key only on the values within ``refresh`` of its end
    (fetched again each run); every other task is the plan's, done once by whichever run."""
    newest = {name: grid.newest(name, plan.refresh) for name in plan.params.rolling}
    newest = {name: values for name, values in newest.items() if values}
    if not newest:
        return None
    return lambda params: key if any(params.get(name) in values for name, values in newest.items()) else None


def _run_key(logical: datetime) -> str:
    """What a scheduled run's task ids carry: its logical time, so each run's work is its own."""
    return logical.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _run_id(plan: str, logical: datetime) -> str:
    return f"{plan}:{_run_key(logical)}"
