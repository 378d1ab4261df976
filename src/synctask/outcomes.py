"""A task's end, carried out: what the worker pool calls when a task has a result or has ended.

First its rows are delivered (durable in the sink, or kept for its job) and a page's notice is
said; then the scheduler's verdict on the outcome is carried out: recorded in the store (a job's
failures are kept by the job instead), told as an event (or only counted when nobody listens),
and its consequences done: a freeze told, tasks cancelled, runs that stopped or finished ended,
a checkpoint saved. The decisions are the scheduler's; this room only does what they say.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from .catalog import Catalog
from .connectors.base import Page
from .delivery import Delivery
from .errors import Failure, OutcomeKind
from .events import EventHub, FreezeEvent, KeyEvent, SkipEvent
from .feedback import Feedback
from .incremental import Cursors
from .jobs import Jobs
from .learners import Learners
from .model import RunState, SyncTask, TaskState, task_id
from .redact import SECRETS
from .runs import Runs
from .scheduler import Scheduler, Verdict
from .store import TaskRecord

_log = logging.getLogger("synctask")

__all__ = ["Outcomes", "answer_outcome"]

_EVENT_KIND = {TaskState.DONE: "done", TaskState.FAILED: "failed", TaskState.RETRY_WAIT: "retry",
               TaskState.PENDING: "requeued", TaskState.CANCELLED: "cancelled"}


def answer_outcome(failure: Failure | None) -> str:
    """How a try's answer ended, in one bounded word: ``ok``, an ``OutcomeKind`` value, or
    ``banned`` (HTTP 418, or a 403 that says ban or that a rule treats as a rate limit)."""
    if failure is None:
        return "ok"
    if failure.status == 418 or (failure.status == 403 and (
            failure.kind in _LIMITED or "ban" in failure.detail.lower())):
        return "banned"
    return failure.kind.value


_LIMITED = (OutcomeKind.RATE_LIMITED, OutcomeKind.QUOTA)


class Outcomes:
    """``deliver`` and ``finish`` for the worker pool; ``end_run`` for whoever ends a run."""

    def __init__(self, scheduler: Scheduler, catalog: Catalog, delivery: Delivery, runs: Runs, jobs: Jobs,
                 hub: EventHub, heard: Feedback, cursors: Cursors, *, cancel: Callable[[Iterable[SyncTask]], None],
                 checkpoint: Callable[[], None], wake: Callable[[], None], clock: Callable[[], float]) -> None:
        self.scheduler = scheduler
        self.catalog = catalog
        self.delivery = delivery
        self.runs = runs
        self.jobs = jobs
        self.hub = hub
        self.heard = heard
        self.cursors = cursors
        self._cancel = cancel
        self._checkpoint = checkpoint
        self._wake = wake
        self._clock = clock
        self.learners: Learners | None = None  # scopes learning their limits from how tasks came back

    async def deliver(self, task: SyncTask, result: Any) -> tuple[int, Mapping[str, Any] | None]:
        """The master's half of a task: a page's notice told, its rows durably in the sink (or
        kept for its job); returns the rows written and the next page's parameters."""
        follow_up = None
        if isinstance(result, Page):
            if result.notice is not None:
                self.heard.notice(task.plan, result.notice)
            follow_up, result = result.next_params, result.rows
        job = self.jobs.results_of(task.plan)
        if job is not None:
            job[task.seq] = result
            return 0, follow_up
        dataset = self.catalog.dataset_of(task)
        if not self.cursors.specs or dataset not in self.cursors.specs:
            return await self.delivery.write(dataset, result), follow_up
        page = self.cursors.page(dataset, task.params)  # cursor sync: rows count once the sink holds them
        written = await self.delivery.write(dataset, result, page.seen)
        page.written(last_page=follow_up is None)
        return written, follow_up

    def finish(self, task: SyncTask, failure: Failure | None, rows: int,
               follow_up: Mapping[str, Any] | None = None) -> None:
        now = self._clock()
        learners = self.learners
        if learners is not None and learners.by_scope:  # no method call per task when nothing learns
            learners.ended(task, self.catalog.dataset_of(task), failure, now)
        try:
            verdict = self.scheduler.report(task, failure, now, follow_up)
        except ValueError:
            return  # the plan was removed and forgotten meanwhile
        if verdict.message and SECRETS:  # a vendor may echo the token back: mask it everywhere
            verdict = verdict._replace(message=SECRETS(verdict.message))
        self._carry_out(task, verdict, rows, now, follow_up, answer_outcome(failure))
        self._wake()

    def _carry_out(self, task: SyncTask, verdict: Verdict, rows: int, now: float,
                   follow_up: Mapping[str, Any] | None, outcome: str = "") -> None:
        more = 1 if follow_up is not None and verdict.state is TaskState.DONE else 0
        run = self.runs.run_of(task.plan)
        state = verdict.state
        job_failures = self.jobs.failures_of(task.plan)
        if job_failures is not None:
            if state is TaskState.FAILED or verdict.stopped:
                job_failures[f"mini-task {task.seq} {dict(task.params)}"] = verdict.message or "failed"
        elif state in (TaskState.DONE, TaskState.FAILED) and run is not None:
            follow = _json(follow_up) if follow_up is not None else None
            params = json.dumps(dict(task.params), default=str) if state is TaskState.FAILED else None
            self.delivery.record(TaskRecord(task.id, task.plan, run.id, state.value, task.attempt, verdict.message,
                                            now, follow, params, rows if state is TaskState.DONE else 0))
            if state is TaskState.DONE and task.run_key is not None and self.catalog.plan(task.plan).rolling:
                # A rolling range's newest task, fetched again by each run: done for the plan too,
                # so the runs after, where it is no longer the newest, skip it. (No run counts it.)
                self.delivery.record(TaskRecord(task_id(task.plan, task.params), task.plan, "", "done",
                                                task.attempt, None, now, follow))
        self.hub.task_ended(now, task, _EVENT_KIND[state], verdict.message, rows, more, outcome)
        if verdict.frozen is not None:
            scope, until, new = verdict.frozen
            self.hub.emit(FreezeEvent(now, task.plan, scope, until, verdict.message or "", new))
        if verdict.key_refused is not None:
            vendor, key, left = verdict.key_refused
            self.hub.emit(KeyEvent(now, task.plan, vendor, key, verdict.message or "", left))
            _log.warning("%s", verdict.message)  # (masked above)
        if verdict.cancel:
            self._cancel(list(verdict.cancel))
        for name in verdict.stopped:
            self.end_run(name, RunState.FAILED, verdict.message)
        if verdict.checkpoint:
            self._checkpoint()
        for name in verdict.finished:
            self.end_run(name, RunState.COMPLETED)

    def note_skips(self) -> None:
        """Tell how many of each plan's tasks were skipped as done since the last time."""
        for plan, skipped in self.scheduler.skips_untold().items():
            self.hub.emit(SkipEvent(self._clock(), plan, skipped, self.scheduler.stats(plan).total))

    def end_run(self, name: str, state: RunState, message: str | None = None) -> None:
        """End the plan's run (a job's is not recorded in the store: it has none)."""
        self.runs.end(name, state, None if self.jobs.results_of(name) is not None else self.runs.counts(name), message)


def _json(params: Mapping[str, Any]) -> str:
    """A follow-up's parameters as the state keeps them (read back as JSON): orjson, several
    times faster for every page of a paginated plan; json where orjson refuses (huge integers)."""
    try:
        return orjson.dumps(dict(params), default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(dict(params), default=str)
