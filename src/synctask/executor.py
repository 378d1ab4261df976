"""SyncTaskExecutor: carries out the scheduler's decisions with real time and real workers.

Theory of operation. One loop owns all decisions. Each turn it starts plans that are due, asks
the scheduler for as many tasks as there are free worker slots, launches each in its own asyncio
task (with its timeout), and then sleeps until the next thing that can change the answer: the
instant the scheduler names (a limit admits, a retry is due, a freeze ends), the next scheduled
plan, or a wake-up from a finished task or a control op. It never polls.

The executor is a conductor: it owns the loop, the control operations and the events, and
composes rooms that own their state (``docs/architecture.md`` has the map): the ``Catalog``
(what is registered, and the fetchers and sinks built from it), ``Runs`` (schedules, run
records), ``Delivery`` (rows to sinks, outcomes to the store), ``Jobs``, the ``TaskPool``, and
the pure ``Scheduler`` and ``Limiter``.

Shutdown: the first SIGINT/SIGTERM stops dispatching and gives in-flight tasks ``grace`` seconds;
the rest are cancelled (they return to pending), the store is flushed, long-window quota usage
and the runs' states are saved. A second signal cancels at once and still saves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .catalog import Catalog, FetcherHooks
from .config import PlanFile
from .connectors import Observation
from .connectors.base import Page
from .delivery import Delivery
from .errors import Failure, UnknownPlan
from .events import Event, EventHub, FreezeEvent, PlanEvent, SkipEvent, StreamEvent, TaskEvent
from .fetchers import Fetcher
from .jobs import Jobs, Probe, probe
from .limits import Limit, Limiter
from .model import Dataset, PlanState, RunState, SyncPlan, SyncTask, TaskState, Vendor, check_workers
from .pool import LocalRunner, Runner, TaskPool
from .progress import Progress
from .redact import SECRETS
from .retry import RetryPolicy
from .runs import Runs
from .scheduler import Scheduler, Verdict
from .sinks import Sink
from .store import MemoryStore, StateUnwritable, Store, TaskRecord

__all__ = ["SyncTaskExecutor", "RunSummary", "Probe"]

_EVENT_KIND = {TaskState.DONE: "done", TaskState.FAILED: "failed", TaskState.RETRY_WAIT: "retry",
               TaskState.PENDING: "requeued", TaskState.CANCELLED: "cancelled"}


@dataclass
class RunSummary:
    """What ``run()`` did: per plan counts, whether it was interrupted, what to type to resume."""

    interrupted: bool = False
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: str | None = None  # why the run had to end at once (the state could not be written)
    problems: list[str] = field(default_factory=list)  # sinks that could not be closed


class SyncTaskExecutor:
    """The engine: plans in, tasks run under exact limits, outcomes recorded durably.

    ``workers`` is the number of concurrent task slots (``set_workers`` changes it while running);
    ``store`` (or ``state``, a SQLite path) keeps outcomes; ``grace`` is how long in-flight tasks
    may finish after the first interrupt.
    """

    def __init__(self, plans: PlanFile | None = None, *, workers: int = 16, store: Store | None = None,
                 state: str | Path | None = None, base_dir: str | Path | None = None, grace: float = 10.0,
                 flush_interval: float = 0.2, node: str | None = None, margin: float = 0.0,
                 ray: str | None = None, ray_workers: int | None = None) -> None:
        check_workers(workers)
        self.limiter = Limiter(margin=margin)
        self.scheduler = Scheduler(self.limiter, node=node)
        self.progress = Progress()
        self.base_dir = Path(base_dir) if base_dir else Path.cwd()
        self.grace = grace
        self.flush_interval = flush_interval
        self._workers = workers
        self._hub = EventHub(self.progress)
        hooks = FetcherHooks(self._observed, self._answered, self._streamed,
                             lambda task: self.store.position(task.id), self._now)
        self.catalog = Catalog(self.base_dir, hooks, remote=ray is not None)
        self._delivery = Delivery(self.catalog, self.limiter, self._now,
                                  store if store is not None else (None if state else MemoryStore()),
                                  Path(state) if state else None)
        self._delivery.on_failure = self._storage_failed
        self._runs = Runs(self.scheduler, lambda: self.store, self.emit, self._now, self._delivery.storing)
        self._jobs = Jobs(self, self._runs)
        self._ray = None
        runner: Runner = LocalRunner(self.catalog.fetchers, self.catalog.dataset_of)
        if ray is not None:
            from .distributed import RayRunner

            runner = self._ray = RayRunner(
                ray, slots=workers, actors=ray_workers, fetch_spec=self.catalog.fetch_specs.__getitem__,
                dataset_of=self.catalog.dataset_of, answered=self._answered, lost=self._worker_lost,
                clock=self._now, observed=self._observed, nodes_changed=self.scheduler.nodes_usable, local=runner)
        self._pool = TaskPool(runner, self._deliver, self._finish)
        self._wake = asyncio.Event()
        self._stopping = False
        self._interrupts = 0
        self._epoch: float | None = None
        self._loop_ref: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._noticed: set[tuple[str, str | None]] = set()
        if plans is not None:
            self.load(plans)

    # --- state ---------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The state store; a SQLite file is created only when first needed, so a plan file that
        fails to load leaves nothing behind."""
        return self._delivery.store

    def open_state(self, *, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> None:
        """Open the ``state`` file now (else on first need), taking its one-writer lock: raises
        ``StateInUse`` naming the process that holds it, or with ``wait`` waits for it to end."""
        self._delivery.open_state(wait=wait, on_wait=on_wait)

    def check_sinks(self, refetch: Collection[str] = ()) -> None:
        """Raise ``SinkMoved`` when a loaded plan's sink is not where its finished tasks wrote
        (unless its dataset is in ``refetch``: those tasks run again), see ``Delivery``."""
        datasets: dict[str, list[str]] = {}
        for plan in self.catalog.plans.values():
            datasets.setdefault(plan.dataset, []).append(plan.name)
        self._delivery.check_sinks(datasets, refetch)

    @property
    def storage_failure(self) -> str | None:
        """Why the state could not be written, when it could not (the run then ended at once)."""
        return self._delivery.failure

    def close(self) -> None:
        """Flush and close the store (call once, after the last ``run``). Outcomes that could not
        be written are said in ``storage_failure``, not raised: the run has ended either way."""
        self._delivery.close()

    # --- setup ---------------------------------------------------------------------------
    def load(self, plans: PlanFile, *, start: bool = True, only: Sequence[str] | None = None) -> None:
        """Register a plan file's vendors, datasets and plans (``only``: these plans)."""
        for vendor in plans.vendors.values():
            self.add_vendor(vendor)
        for dataset in plans.datasets.values():
            self.add_dataset(dataset)
        for plan in plans.plans:
            if only is None or plan.name in only:
                self.add_plan(plan, start=start)

    def add_vendor(self, vendor: Vendor) -> None:
        self.catalog.vendors[vendor.name] = vendor

    def add_dataset(self, dataset: Dataset, *, fetch: Callable[..., Any] | Fetcher | None = None,
                    sink: Sink | None = None) -> None:
        """Register a dataset with how its tasks run (``fetch``: a callable or a Fetcher; default
        from a ``python:`` api or connector) and where rows go (default: its ``sink`` table)."""
        self.scheduler.add_dataset(dataset, self.catalog.vendors.get(dataset.vendor))
        self.catalog.add_dataset(dataset, fetch, sink)

    def add_plan(self, plan: SyncPlan, *, start: bool = True) -> None:
        """Register a plan; ``start`` begins a run now, and a schedule starts later runs when due."""
        if plan.dataset not in self.catalog.datasets:
            raise UnknownPlan(f"plan {plan.name!r} uses dataset {plan.dataset!r}, which was not added")
        if plan.name in self.catalog.plans:
            raise ValueError(f"plan {plan.name!r} is already added; remove it first")
        self.catalog.plans[plan.name] = plan
        self.progress.set_limit_time(plan.name, functools.partial(self.scheduler.time_for, plan.dataset))
        self._runs.schedule(plan, self._now_dt())
        if start:
            self._runs.start(plan, None)
        self._wake.set()

    def remove_dataset(self, name: str) -> None:
        """Forget a dataset (its plans must be removed first); ``close_removed`` closes its sink."""
        self.scheduler.remove_dataset(name)
        self.catalog.remove_dataset(name)

    def remove_vendor(self, name: str) -> None:
        """Forget a vendor no dataset uses. Its limits' counts stay with the limiter: a vendor
        added again at once must still see what was sent in its windows."""
        self.catalog.remove_vendor(name)

    async def close_removed(self) -> None:
        """Close now the sinks of datasets removed meanwhile: nothing writes to them any more, and
        nothing of theirs is touched later (not even at shutdown)."""
        await self._delivery.close_sinks(self.catalog.take_removed())

    # --- control ops ---------------------------------------------------------------------
    def start_plan(self, name: str) -> None:
        """Start the plan now, even if not due; a stopped, paused or failed run continues."""
        plan = self.catalog.plan(name)
        if self.scheduler.has_plan(name):
            state = self.scheduler.plan_state(name)
            if state in (PlanState.STOPPED, PlanState.PAUSED, PlanState.FAILED):
                self.resume_plan(name)
                return
            if state is PlanState.RUNNING:
                return
        self._runs.start(plan, None)
        self._wake.set()

    def pause_plan(self, name: str) -> None:
        """Dispatch no more of the plan's tasks; in-flight tasks finish."""
        self.catalog.plan(name)
        self.scheduler.pause_plan(name)
        self._told(name, "paused")

    def resume_plan(self, name: str) -> None:
        self.catalog.plan(name)
        self.scheduler.resume_plan(name)
        self._told(name, "running")

    def stop_plan(self, name: str) -> list[SyncTask]:
        """Dispatch no more; cancel in-flight tasks (they return to pending). Returns them."""
        self.catalog.plan(name)
        tasks = self.scheduler.stop_plan(name)
        self.cancel(tasks)
        self._told(name, "stopped")
        return tasks

    def cancel_plan(self, name: str) -> list[SyncTask]:
        """Stop and end the run as cancelled."""
        self.catalog.plan(name)
        tasks = self.scheduler.cancel_plan(name)
        self.cancel(tasks)
        self._end_run(name, RunState.CANCELLED)
        self._wake.set()
        return tasks

    def remove_plan(self, name: str) -> list[SyncTask]:
        """Cancel the plan and forget it (its finished work stays recorded)."""
        self.catalog.plan(name)
        tasks: list[SyncTask] = []
        if self.scheduler.has_plan(name):
            if self.scheduler.plan_state(name) not in (PlanState.CANCELLED, PlanState.COMPLETED) and \
                    self._runs.run_id(name) is not None:
                tasks = self.cancel_plan(name)
            else:
                tasks = self.scheduler.in_flight(name)
            self.scheduler.remove_plan(name)
        self.cancel(tasks)
        self.catalog.plans.pop(name, None)
        self._runs.due.pop(name, None)
        self.emit(PlanEvent(self._now(), name, "removed"))
        self._wake.set()
        return tasks

    def _told(self, name: str, state: str) -> None:
        self.emit(PlanEvent(self._now(), name, state, self._runs.run_id(name)))
        self._wake.set()

    async def settled(self, tasks: Iterable[SyncTask], timeout: float) -> None:
        """Wait (up to ``timeout``) until these tasks, cancelled or not, have finished ending."""
        await self._pool.settled(tasks, timeout)

    def set_workers(self, workers: int) -> None:
        """Change the number of concurrent slots; fewer slots let running tasks finish first."""
        self._workers = check_workers(workers)
        self._wake.set()

    @property
    def workers(self) -> int:
        return self._workers

    def in_flight(self) -> int:
        return len(self._pool)

    def plan_state(self, name: str) -> PlanState:
        self.catalog.plan(name)
        return self.scheduler.plan_state(name) if self.scheduler.has_plan(name) else PlanState.IDLE

    def plan(self, name: str) -> SyncPlan:
        """The plan named ``name`` (``UnknownPlan`` when there is none)."""
        return self.catalog.plan(name)

    def dataset(self, name: str) -> Dataset:
        """The dataset named ``name`` (``UnknownPlan`` when there is none)."""
        return self.catalog.dataset(name)

    def next_due(self, name: str) -> datetime | None:
        """When the plan's schedule next starts a run (None: manual, or no time left)."""
        self.catalog.plan(name)
        return self._runs.due.get(name)

    def plans(self) -> list[SyncPlan]:
        """The plans added, in the order they were added."""
        return list(self.catalog.plans.values())

    def datasets(self) -> list[Dataset]:
        """The datasets added, in the order they were added."""
        return list(self.catalog.datasets.values())

    def vendors(self) -> list[Vendor]:
        """The vendors added, in the order they were added."""
        return list(self.catalog.vendors.values())

    # --- events --------------------------------------------------------------------------
    def listen(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback`` with every event as it happens, in the engine's loop (keep it quick);
        returns the function that stops it. Unlike ``events()`` nothing is ever dropped."""
        return self._hub.listen(callback)

    def events(self) -> AsyncIterator[Event]:
        """Every event from now on, in order. A consumer that falls 10,000 events behind loses
        the oldest ones rather than slowing the engine down."""
        return self._hub.follow()

    def emit(self, event: Event) -> None:
        self._hub.emit(event)

    # --- the loop ------------------------------------------------------------------------
    async def run(self, *, until_idle: bool = True, handle_signals: bool = False) -> RunSummary:
        """Drive the plans. ``until_idle``: return when no plan has work left (burst mode);
        otherwise run until ``shutdown()`` or a signal. ``handle_signals`` installs the
        SIGINT/SIGTERM handlers (first: graceful, second: immediate)."""
        loop = self._bind_loop()
        self._delivery.restore_usage()
        await self._delivery.recover_sinks({plan.dataset for plan in self.catalog.plans.values()})
        if self._ray is not None:
            await self._ray.start()
            self.scheduler.set_nodes(self._ray.nodes_up())  # node-scoped limits count per Ray node
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.interrupt)
        self._running = True
        flusher = asyncio.create_task(self._delivery.save_usage_periodically(self.flush_interval))
        try:
            await self._loop(until_idle)
            await self._pool.drain(self.grace, self._now, lambda: self._interrupts >= 2)
        finally:
            self._running = False
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            # Cleanup runs whatever happened; it needs no awaits, so cancellation cannot cut it.
            self._checkpoint()
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        await self.catalog.close_sessions()
        await self._delivery.close_sinks(self.catalog.take_opened())
        if self._ray is not None:
            await self._ray.close()
        return self._summary()

    async def _loop(self, until_idle: bool) -> None:
        runs, scheduler, pool = self._runs, self.scheduler, self._pool
        while not self._stopping:
            now = self._now()
            if runs.due:
                runs.start_due(self.catalog.plans, self._now_dt())
            capacity = self._workers if self._ray is None else self._workers * max(len(self._ray.workers), 1)
            free = capacity - len(pool)
            if free > 0:
                decision = scheduler.dispatch(now, free)
                self._note_skips()
                for task in decision.tasks:
                    self._launch(task)
                for name in decision.finished:
                    self._end_run(name, RunState.COMPLETED)
                wake_at = decision.wake_at
                if decision.tasks and scheduler.has_ready and len(pool) < capacity:
                    await asyncio.sleep(0)  # let workers start; more may be admissible right now
                    continue
            else:
                wake_at = scheduler.next_wake()
            if until_idle and not len(pool) and not scheduler.has_waiting_plans():
                return  # burst mode is over: nothing runs, and no plan could go on by itself
            due = runs.next_wake()
            if due is not None:
                wake_at = due if wake_at is None else min(wake_at, due)
            await self._sleep_until(wake_at)

    async def _sleep_until(self, wake_at: float | None) -> None:
        self._wake.clear()
        timeout = None if wake_at is None else max(wake_at - self._now(), 0.0)
        if timeout == 0.0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def shutdown(self) -> None:
        """Stop dispatching and end ``run()`` gracefully (as a first Ctrl-C does)."""
        self._stopping = True
        self._wake.set()

    def interrupt(self) -> None:
        """What a signal does: the first is graceful, the second cancels everything at once."""
        self._interrupts += 1
        self.shutdown()
        if self._interrupts >= 2:
            self._pool.cancel(self._pool.tasks())

    def _storage_failed(self, exc: StateUnwritable) -> None:
        """The state cannot be written: say so on every plan and end the run at once, without
        grace (the outcomes of tasks in flight could not be recorded)."""
        for run in self._runs:
            if self.scheduler.has_plan(run.plan):
                self.emit(PlanEvent(self._now(), run.plan, self.scheduler.plan_state(run.plan).value, run.id,
                                    message=str(exc)))
        self._stopping = True
        self._interrupts = max(self._interrupts, 2)
        self._pool.cancel(self._pool.tasks())
        self._wake.set()

    def _checkpoint(self) -> None:
        """Save what must survive: buffered outcomes, long-window usage, unfinished runs."""
        with self._delivery.storing():
            self._delivery.save_usage()
            if self._stopping:
                for run in self._runs.unfinished():
                    self.store.end_run(run.id, RunState.INTERRUPTED.value, self._now(), self._stats(run.plan))

    def _end_run(self, name: str, state: RunState, message: str | None = None) -> None:
        self._runs.end(name, state, None if name in self._jobs.results else self._stats(name), message)

    def _note_skips(self) -> None:
        for plan, skipped in self.scheduler.skipped_counts().items():
            seen = self.progress.plans.get(plan)
            if seen is not None and skipped > seen.skipped:
                self.emit(SkipEvent(self._now(), plan, skipped - seen.skipped, self.scheduler.stats(plan).total))

    # --- tasks ---------------------------------------------------------------------------
    def _launch(self, task: SyncTask) -> None:
        if self._hub.heard:
            self.emit(TaskEvent(self._now(), task.plan, "started", task.id))
        else:  # nobody else listens: no event object per task, only the count of tasks in flight
            self.progress.started(task.plan)
        self._pool.start(task)

    async def _deliver(self, task: SyncTask, result: Any) -> tuple[int, Mapping[str, Any] | None]:
        """The master's half of a task: a page's notice told, its rows durably in the sink (or
        kept for its job); returns the rows written and the next page's parameters."""
        follow_up = None
        if isinstance(result, Page):
            if result.notice is not None:
                self._notice(task.plan, result.notice)
            follow_up, result = result.next_params, result.rows
        job = self._jobs.results.get(task.plan)
        if job is not None:
            job[task.seq] = result
            return 0, follow_up
        return await self._delivery.write(self.catalog.dataset_of(task), result), follow_up

    def _finish(self, task: SyncTask, failure: Failure | None, rows: int,
                follow_up: Mapping[str, Any] | None = None) -> None:
        now = self._now()
        try:
            verdict = self.scheduler.report(task, failure, now, follow_up)
        except ValueError:
            return  # the plan was removed and forgotten meanwhile
        if verdict.message and SECRETS:  # a vendor may echo the token back: mask it everywhere
            verdict = verdict._replace(message=SECRETS(verdict.message))
        self._after(task, verdict, rows, now, follow_up)
        self._wake.set()

    def _after(self, task: SyncTask, verdict: Verdict, rows: int, now: float,
               follow_up: Mapping[str, Any] | None = None) -> None:
        more = 1 if follow_up is not None and verdict.state is TaskState.DONE else 0
        run = self._runs.current.get(task.plan)
        state = verdict.state
        job_failures = self._jobs.failures.get(task.plan)
        if job_failures is not None:
            if state is TaskState.FAILED or verdict.stopped:
                job_failures[f"mini-task {task.seq} {dict(task.params)}"] = verdict.message or "failed"
        elif state in (TaskState.DONE, TaskState.FAILED) and run is not None:
            follow = json.dumps(dict(follow_up), default=str) if follow_up is not None else None
            self._delivery.record(TaskRecord(task.id, task.plan, run.id, state.value, task.attempt, verdict.message,
                                             now, follow))
        if self._hub.heard:
            self.emit(TaskEvent(now, task.plan, _EVENT_KIND[state], task.id, verdict.message, rows, more,
                                task.attempt))
        else:  # nobody else listens: progress counts it without an event object per task
            self.progress.ended(task.plan, _EVENT_KIND[state], now, verdict.message, rows, more)
        if verdict.frozen is not None:
            scope, until, new = verdict.frozen
            self.emit(FreezeEvent(now, task.plan, scope, until, verdict.message or "", new))
        if verdict.cancel:
            self.cancel(list(verdict.cancel))
        for name in verdict.stopped:
            self._end_run(name, RunState.FAILED, verdict.message)
        if verdict.checkpoint:
            self._checkpoint()
        for name in verdict.finished:
            self._end_run(name, RunState.COMPLETED)

    def cancel(self, tasks: Iterable[SyncTask]) -> None:
        self._pool.cancel(tasks)

    # --- what fetchers and workers tell ---------------------------------------------------
    def _observed(self, task: SyncTask, observation: Observation, now: float) -> None:
        """The vendor's own count of what we used (rate-limit headers), on this process or a node."""
        plan = self.catalog.plans.get(task.plan)
        dataset = self.catalog.datasets.get(plan.dataset) if plan else None
        if dataset is None:
            return
        scope = f"vendor:{dataset.vendor}" if observation.scope == "vendor" else f"dataset:{dataset.name}"
        held = self.limiter.observe(scope, observation.used, now, observation.per)
        # "Nothing left until the reset": freeze, unless our own quota over the same window now
        # holds the vendor's count and so waits exactly as long (a whole-second reset would
        # over-wait on a sliding window).
        if observation.freeze_for and not held:
            until = now + observation.freeze_for
            new = self.scheduler.announced_freeze(task, scope, now, until)
            message = (f"the vendor's rate-limit headers say nothing is left until its reset; synctask "
                       f"froze {scope} for {observation.freeze_for:g}s, before any 429")
            self.emit(FreezeEvent(now, task.plan, scope, until, message, new))

    def _answered(self, task: SyncTask, at: float) -> None:
        """A fetcher got the first byte of the task's answer: its windows count it until ``at``
        plus their length, and queues waiting on that room may go on."""
        self.scheduler.answered(task, at)
        self._wake.set()

    def _streamed(self, task: SyncTask, messages: int, rows: int, position: dict[str, int]) -> None:
        """A stream wrote a batch: where it got to is saved, so the next run resumes there."""
        self.store.save_position(task.id, position)
        self.emit(StreamEvent(self._now(), task.plan, task.id, messages, rows))

    def _worker_lost(self, message: str, tasks: list[SyncTask]) -> None:
        """A Ray worker died: say so on each plan that had tasks on it (they go back to their queues)."""
        for plan in sorted({task.plan for task in tasks}):
            if self.scheduler.has_plan(plan):
                self.emit(PlanEvent(self._now(), plan, self.scheduler.plan_state(plan).value,
                                    self._runs.run_id(plan), message=message))

    def _notice(self, plan: str, message: str) -> None:
        """Tell people once per plan and run about something odd in an answer (a plan event)."""
        key = (plan, self._runs.run_id(plan))
        if key in self._noticed or not self.scheduler.has_plan(plan):
            return
        self._noticed.add(key)
        self.emit(PlanEvent(self._now(), plan, self.scheduler.plan_state(plan).value, key[1], message=message))

    # --- probes and jobs -------------------------------------------------------------------
    async def probe(self, name: str) -> Probe:
        """Fetch the first task of plan ``name`` once, under its limits (waiting if they say so),
        and return what came back; nothing is written and nothing is recorded. A failure raises
        ``TaskFailed`` with the sentence a run would have said."""
        plan = self.catalog.plan(name)
        self._bind_loop()
        self._delivery.restore_usage()
        return await probe(plan, self.catalog, self.scheduler, self._now)

    async def submit_job(self, split: Iterable[Any] | Callable[[], Iterable[Any]], execute: Callable[[Any], Any],
                         aggregate: Callable[[list[Any]], Any] = list, *, name: str | None = None,
                         priority: int = 0, timeout: float | None = None, retry: RetryPolicy | None = None,
                         limits: Sequence[Limit] = (), vendor: str | None = None) -> Any:
        """Divide work into mini-tasks (``split``), run ``execute(item)`` for each under the same
        limits, priorities, timeouts, retries and control ops as plans, and return
        ``aggregate(results)`` with results in split order. Raises ``JobFailed`` naming each
        failed mini-task and why. The job is a plan named ``name`` while it runs."""
        return await self._jobs.submit(split, execute, aggregate, name=name, priority=priority, timeout=timeout,
                                       retry=retry, limits=limits, vendor=vendor)

    # What a job needs of its engine (``jobs.JobHost``).
    @property
    def running(self) -> bool:
        return self._running

    def drive(self) -> Any:
        return self.run(until_idle=True)

    def wake(self) -> None:
        self._wake.set()

    def now(self) -> float:
        return self._now()

    # --- helpers -------------------------------------------------------------------------
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        """Take the running loop's clock as the executor's (so a virtual-time loop moves it too)."""
        loop = asyncio.get_running_loop()
        self._loop_ref = self._delivery.loop = loop
        if self._epoch is None:
            self._epoch = time.time() - loop.time()
        return loop

    def _now(self) -> float:
        """Epoch seconds on the loop's clock (so a virtual-time loop moves the executor too)."""
        loop = self._loop_ref
        if self._epoch is None or loop is None or loop.is_closed():
            return time.time()
        return self._epoch + loop.time()

    def _now_dt(self) -> datetime:
        return datetime.fromtimestamp(self._now(), UTC)

    def _stats(self, name: str) -> dict[str, Any]:
        s = self.scheduler.stats(name)
        return {"done": s.done, "failed": s.failed, "skipped": s.skipped, "retries": s.retries,
                "freezes": s.freezes, "total": s.total}

    def _summary(self) -> RunSummary:
        summary = RunSummary(interrupted=self._interrupts > 0 or self._stopping, failure=self._delivery.failure,
                             problems=list(self._delivery.sink_failures))
        for name in self.catalog.plans:
            if self.scheduler.has_plan(name):
                state = self.scheduler.plan_state(name).value
                if summary.interrupted and state in ("running", "paused", "stopped"):
                    state = "interrupted"  # it did not end: the next run goes on from here
                summary.plans[name] = {**self._stats(name), "state": state,
                                       "rows": self.progress.plans[name].rows if name in self.progress.plans else 0}
        return summary
