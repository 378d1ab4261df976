"""Jobs: the general master/worker API, and the probe of a plan's first task.

A job is a plan without a plan file: ``split`` gives its mini-tasks, ``execute`` runs each (here
or on a Ray node) under the same limits, priorities, timeouts, retries and control ops as any
plan, and ``aggregate`` turns the results, in split order, into the job's answer. Its results
and failures are kept here, not in the store or a sink.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .catalog import Catalog
from .connectors.base import Page
from .errors import JobFailed, SyncError, TaskFailed, UnknownPlan, classify
from .events import Event, PlanEvent
from .grid import ParamGrid
from .limits import Limit
from .model import Dataset, PlanState, SyncPlan, SyncTask
from .progress import Progress
from .redact import SECRETS
from .retry import RetryPolicy
from .runs import Runs
from .schedule import parse_schedule
from .scheduler import Scheduler
from .sinks import rows_of

__all__ = ["Jobs", "JobHost", "Probe", "probe"]

_job_counter = itertools.count(1)


@dataclass(frozen=True)
class JobHost:
    """What a job needs of the engine that runs it, besides the catalog, scheduler and runs."""

    progress: Progress
    emit: Callable[[Event], None]
    wake: Callable[[], None]
    cancel: Callable[[Iterable[SyncTask]], None]
    now: Callable[[], float]
    running: Callable[[], bool]  # whether the engine's loop already runs
    drive: Callable[[], Coroutine[Any, Any, Any]]  # run it until idle, when it does not


class Jobs:
    """Jobs running now: each one's results by mini-task, and its failures in words."""

    def __init__(self, host: JobHost, catalog: Catalog, scheduler: Scheduler, runs: Runs) -> None:
        self.host = host
        self.catalog = catalog
        self.scheduler = scheduler
        self.runs = runs
        self.results: dict[str, dict[int, Any]] = {}
        self.failures: dict[str, dict[str, str]] = {}

    def results_of(self, plan: str) -> dict[int, Any] | None:
        """The results of the job named ``plan`` so far (None: no such job is running)."""
        return self.results.get(plan)

    def failures_of(self, plan: str) -> dict[str, str] | None:
        return self.failures.get(plan)

    async def submit(self, split: Iterable[Any] | Callable[[], Iterable[Any]], execute: Callable[[Any], Any],
                     aggregate: Callable[[list[Any]], Any], *, name: str | None, priority: int,
                     timeout: float | None, retry: RetryPolicy | None, limits: Sequence[Limit],
                     vendor: str | None) -> Any:
        host, catalog, scheduler = self.host, self.catalog, self.scheduler
        items = list(split() if callable(split) else split)
        name = name or f"job-{next(_job_counter)}"
        dataset_name = f"job:{name}"
        if vendor is not None and vendor not in catalog.vendors:
            raise UnknownPlan(f"job {name!r} names vendor {vendor!r}, which was not added")
        dataset = Dataset(dataset_name, vendor or f"job:{name}", dataset_name, tuple(limits))
        scheduler.add_dataset(dataset, catalog.vendors.get(vendor) if vendor else None)
        catalog.add_callable(dataset, execute)
        params = [dict(item) if isinstance(item, Mapping) else {"item": item} for item in items]
        plan = SyncPlan(name, dataset_name, ParamGrid({}), parse_schedule("manual"), priority, timeout,
                        retry or RetryPolicy())
        catalog.add_plan(plan)
        results: dict[int, Any] = {}
        self.results[name] = results
        self.failures[name] = {}
        done = self.runs.track(name, f"{name}:job")
        host.progress.set_limit_time(name, functools.partial(scheduler.time_for, dataset_name))
        scheduler.add_plan(plan, params)
        host.emit(PlanEvent(host.now(), name, "running", f"{name}:job", total=len(params)))
        host.wake()
        driver = None if host.running() else asyncio.create_task(host.drive())
        try:
            outcome = await done
        finally:
            if scheduler.has_plan(name) and scheduler.plan_state(name) is not PlanState.COMPLETED:
                host.cancel(scheduler.remove_plan(name))
            if driver is not None:
                await driver
            self.results.pop(name, None)
            self._forget(name, dataset_name)
        failures = self.failures.pop(name, {})
        if outcome != "completed" or failures:
            if not failures:
                failures = {name: f"the job ended {outcome}"}
            raise JobFailed(name, failures, len(params))
        if len(results) != len(params):
            raise JobFailed(name, {name: "some mini-tasks produced no result"}, len(params))
        return aggregate([results[i] for i in range(len(params))])

    def _forget(self, name: str, dataset: str) -> None:
        if self.scheduler.has_plan(name):
            self.scheduler.remove_plan(name)
        self.scheduler.remove_dataset(dataset)
        self.catalog.remove_plan(name)
        self.catalog.remove_dataset(dataset)
        self.runs.untrack(name)


@dataclass
class Probe:
    """What one task's first request brought back: its parameters, rows, and the next page's."""

    params: dict[str, Any]
    rows: list[Mapping[str, Any]]
    next_params: Mapping[str, Any] | None


async def probe(plan: SyncPlan, catalog: Catalog, scheduler: Scheduler, now: Callable[[], float]) -> Probe:
    """Fetch the plan's first task once, under its limits (waiting if they say so); nothing is
    written and nothing is recorded. A failure raises ``TaskFailed`` with a run's sentence."""
    params = next(iter(plan.params.bind(datetime.fromtimestamp(now(), UTC))), None)
    if params is None:
        raise SyncError(f"plan {plan.name!r} has no tasks to probe")
    task = SyncTask(plan.name, params, plan.priority, plan.timeout)
    gate, weight = scheduler.gate_of(plan.dataset)
    while (when := gate.try_acquire(weight, now())) is not None:
        if when == math.inf:
            raise SyncError(f"plan {plan.name!r}: its concurrency limit is full")
        await asyncio.sleep(when - now())
    task.node, task.key = gate.chosen, gate.key  # (the key its limits chose, of several)
    try:
        result = await catalog.fetchers[plan.dataset].fetch(task)
    except Exception as exc:
        failure = classify(exc=exc)
        raise TaskFailed(task.id, failure, SECRETS(failure.explain("stopped the probe"))) from None
    finally:
        gate.settle(weight, now(), task.node, task.key)
        gate.release(task.node, task.key)
        await catalog.close_sessions()
    follow_up = None
    if isinstance(result, Page):
        follow_up, result = result.next_params, result.rows
    return Probe(dict(params), rows_of(result), follow_up)
