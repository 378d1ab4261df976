"""What fetchers and workers tell the engine while tasks run, turned into limiter facts and events.

A fetcher reports the first byte of each answer (a request occupies its windows until then),
the vendor's own count from its rate-limit headers (adopted by the limiter; "nothing left"
freezes the scope before any 429), and a stream's position after each written batch; the Ray
runner reports a lost worker; an answer may carry a notice worth saying once per run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .catalog import Catalog
from .connectors import Observation
from .events import Event, FreezeEvent, PlanEvent, StreamEvent
from .learners import Learners
from .limits import Limiter
from .model import SyncTask, key_scope
from .runs import Runs
from .scheduler import Scheduler
from .store import Store

__all__ = ["Feedback"]


class Feedback:
    """The engine's ears: each method is a hook a fetcher, a stream or the worker pool calls."""

    def __init__(self, catalog: Catalog, limiter: Limiter, scheduler: Scheduler, runs: Runs,
                 store: Callable[[], Store], emit: Callable[[Event], None], wake: Callable[[], None],
                 clock: Callable[[], float], learners: Learners | None = None) -> None:
        self.catalog = catalog
        self.limiter = limiter
        self.scheduler = scheduler
        self.runs = runs
        self._store = store
        self._emit = emit
        self._wake = wake
        self._clock = clock
        self.learners = learners
        self._noticed: set[tuple[str, str | None]] = set()

    def answered(self, task: SyncTask, at: float) -> None:
        """The first byte of the task's answer came at ``at``: its windows count it until then plus
        their length, and queues waiting on that room may go on."""
        self.scheduler.answered(task, at)
        self._wake()

    def observed(self, task: SyncTask, observation: Observation, now: float) -> None:
        """The vendor's own count of what we used (rate-limit headers), on this process or a node."""
        plan = self.catalog.plans.get(task.plan)
        dataset = self.catalog.datasets.get(plan.dataset) if plan else None
        if dataset is None:
            return
        scope = f"vendor:{dataset.vendor}" if observation.scope == "vendor" else f"dataset:{dataset.name}"
        if task.key is not None:  # one of several keys: the vendor counts that key's use
            scope = key_scope(task.key, scope)
        if self.learners and observation.limit is not None and observation.per is not None:
            self.learners.stated(scope, observation.limit, observation.per, observation.source or "its headers")
        held = self.limiter.observe(scope, observation.used, now, observation.per)
        # "Nothing left until the reset": freeze, unless our own quota over the same window now
        # holds the vendor's count and so waits exactly as long (a whole-second reset would
        # over-wait on a sliding window).
        if observation.freeze_for and not held:
            until = now + observation.freeze_for
            new = self.scheduler.announced_freeze(task, scope, now, until)
            message = (f"the vendor's rate-limit headers say nothing is left until its reset; synctask "
                       f"froze {scope} for {observation.freeze_for:g}s, before any 429")
            self._emit(FreezeEvent(now, task.plan, scope, until, message, new))

    def streamed(self, task: SyncTask, messages: int, rows: int, position: dict[str, int]) -> None:
        """A stream wrote a batch: where it got to is saved, so the next run resumes there."""
        self._store().save_position(task.id, position)
        self._emit(StreamEvent(self._clock(), task.plan, task.id, messages, rows))

    def reconnected(self, task: SyncTask, reconnects: int, next_seq: int | None) -> None:
        """A stream's connection was cut and is back: say so, and where it goes on from."""
        where = f"asked to go on from message {next_seq:,}" if next_seq is not None else "subscribed again"
        times = "once" if reconnects == 1 else f"{reconnects} times"
        self._say(task.plan, f"the stream's connection was cut; reconnected ({times} so far) and {where}: "
                             "nothing received is lost or written twice")

    def resume(self, task: SyncTask) -> dict[str, Any] | None:
        """Where a stream task got to in an earlier run."""
        return self._store().position(task.id)

    def worker_lost(self, message: str, tasks: list[SyncTask]) -> None:
        """A Ray worker died: say so on each plan that had tasks on it (they go back to their queues)."""
        for plan in sorted({task.plan for task in tasks}):
            self._say(plan, message)

    def notice(self, plan: str, message: str) -> None:
        """Something odd in an answer, said once per plan and run."""
        key = (plan, self.runs.run_id(plan))
        if key not in self._noticed and self.scheduler.has_plan(plan):
            self._noticed.add(key)
            self._say(plan, message)

    def say_everywhere(self, message: str) -> None:
        """Something every plan with a run must hear (the state cannot be written)."""
        for run in self.runs:
            self._say(run.plan, message)

    def _say(self, plan: str, message: str) -> None:
        if self.scheduler.has_plan(plan):
            self._emit(PlanEvent(self._clock(), plan, self.scheduler.plan_state(plan).value, self.runs.run_id(plan),
                                 message=message))
