"""Shared helpers: plans and a driver that runs the pure scheduler with a fake clock."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings

from synctask import Dataset, Failure, ParamGrid, RetryPolicy, Scheduler, SyncPlan, SyncTask, Vendor, parse_schedule

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def make_plan(name: str, dataset: str, n: int, *, priority: int = 0,
              retry: RetryPolicy | None = None, on_fatal: str = "stop_plan") -> SyncPlan:
    return SyncPlan(
        name=name,
        dataset=dataset,
        params=ParamGrid.from_spec({"i": {"from": 0, "to": n - 1}}) if n else ParamGrid({"i": []}),
        schedule=parse_schedule("manual"),
        priority=priority,
        retry=retry or RetryPolicy.testing(),
        on_fatal=on_fatal,
    )


def run_until_idle(
    sched: Scheduler,
    *,
    now: float = 0.0,
    slots: int = 1_000_000,
    outcome: Callable[[SyncTask, float], Failure | None] = lambda task, now: None,
    until: float = float("inf"),
    max_steps: int = 1_000_000,
) -> tuple[list[tuple[float, SyncTask]], float]:
    """Dispatch and report with a fake clock that jumps to each wake time; returns the sends."""
    sent: list[tuple[float, SyncTask]] = []
    for _ in range(max_steps):
        decision = sched.dispatch(now, slots)
        for task in decision.tasks:
            sent.append((now, task))
            sched.report(task, outcome(task, now), now)
        if decision.tasks or sched.has_ready:
            continue
        if decision.wake_at is None or decision.wake_at > until:
            return sent, now
        now = decision.wake_at
    raise AssertionError("the scheduler did not settle")


@pytest.fixture
def vendor() -> Vendor:
    return Vendor("v", "rest")


def dataset(name: str, vendor: str = "v", limits: tuple[Any, ...] = (), weight: int = 1) -> Dataset:
    return Dataset(name, vendor, name, limits, weight)


@pytest.fixture
def workdir(tmp_path):
    """A folder for `synctask serve` tests: two plans of Python tasks (see ``served.py``)."""
    from .served import make_workdir

    return make_workdir(tmp_path)
