"""SyncTaskExecutor: carries out the scheduler's decisions with real time and real workers.

Theory of operation. One loop owns all decisions. Each turn it starts plans that are due, asks
the scheduler for as many tasks as there are free worker slots, launches each in its own asyncio
task (with its timeout), and then sleeps until the next thing that can change the answer: the
instant the scheduler names (a limit admits, a retry is due, a freeze ends), the next scheduled
plan, or a wake-up from a finished task or a control op. It never polls. The executor owns the
loop, the control operations and the events, and composes rooms that own their state (the map
is ``docs/architecture.md``): catalog, runs, delivery, outcomes, feedback, jobs, the pool, and
the pure scheduler and limiter.

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
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .alarm import Alarm
from .catalog import Catalog, FetcherHooks
from .config import PlanFile
from .delivery import Delivery
from .errors import IllegalTransition, UnknownPlan
from .events import Event, EventHub, PlanEvent
from .feedback import Feedback
from .fetchers import Fetcher
from .incremental import Cursors
from .jobs import JobHost, Jobs, Probe, probe
from .learners import Learners
from .limits import Limit, Limiter
from .model import Dataset, PlanState, RunState, SyncPlan, SyncTask, Vendor, check_workers
from .outcomes import Outcomes
from .permits import PermitDesk
from .pool import LocalRunner, Runner, TaskPool
from .progress import Progress
from .retry import RetryPolicy
from .runs import Runs, RunSummary
from .scheduler import Scheduler
from .sinks import Sink
from .store import MemoryStore, StateUnwritable, Store

__all__ = ["SyncTaskExecutor", "RunSummary", "Probe"]


class SyncTaskExecutor:
    """The engine: plans in, tasks run under exact limits, outcomes recorded durably. ``workers``:
    concurrent task slots; ``store`` (or ``state``, a SQLite path) keeps outcomes; ``grace``: how
    long in-flight tasks may finish after the first interrupt."""

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
        self._wake = Alarm()
        self._hub = EventHub(self.progress)
        self.catalog = catalog = Catalog(self.base_dir, remote=ray is not None)
        store = store if store is not None else (None if state else MemoryStore())
        self.delivery = Delivery(catalog, self.limiter, self._now, store, Path(state) if state else None)
        self.delivery.on_failure = self._storage_failed
        self.delivery.on_lease += [self.scheduler.renewed, self._wake.ring]  # queues waiting on a lease go
        self.cursors = cursors = Cursors(lambda: self.store, catalog.options_of)
        self._runs = runs = Runs(self.scheduler, self.progress, cursors, lambda: self.store, self.emit, self._now,
                                 self.delivery.storing)
        self.delivery.counts, self.delivery.going = runs.counts_going, lambda: {r.id: r.plan for r in runs.unfinished()}
        self._jobs = Jobs(JobHost(self.progress, self.emit, self._wake.ring, self.cancel, self._now,
                                  lambda: self._running, lambda: self.run(until_idle=True)),
                          catalog, self.scheduler, self._runs)
        self.learners = learners = Learners(self.scheduler, lambda: self.store, self._now)
        self.delivery.before_restore = learners.restore  # learned limits first: usage counts under them
        self._heard = heard = Feedback(catalog, self.limiter, self.scheduler, self._runs, lambda: self.store,
                                       self.emit, self._wake.ring, self._now, learners)
        catalog.hooks = FetcherHooks(heard.observed, heard.answered, heard.streamed, heard.resume, self._now,
                                     heard.reconnected)
        self._ray = None
        runner: Runner = LocalRunner(catalog.fetchers, catalog.dataset_of)
        if ray is not None:
            from .distributed import RayRunner

            runner = self._ray = RayRunner(
                ray, slots=workers, actors=ray_workers, fetch_spec=catalog.fetch_specs.__getitem__,
                dataset_of=catalog.dataset_of, answered=heard.answered, lost=heard.worker_lost, clock=self._now,
                observed=heard.observed, nodes_changed=self.scheduler.nodes_usable, local=runner)
        self._outcomes = Outcomes(self.scheduler, catalog, self.delivery, self._runs, self._jobs, self._hub, heard,
                                  cursors, cancel=self.cancel, checkpoint=self._checkpoint, wake=self._wake.ring,
                                  clock=self._now)
        self._outcomes.learners = learners
        self.permits = PermitDesk(self.scheduler, lambda: catalog.vendors, lambda: catalog.datasets, self._wake.ring,
                                  self._now, learners)  # other programs' requests, on the same limits
        self._pool = TaskPool(runner, self._outcomes.deliver, self._outcomes.finish)
        self._stopping = False
        self._interrupts = 0
        self._epoch: float | None = None
        self._uvloop: asyncio.AbstractEventLoop | None = None  # a loop whose time() is too coarse (see _bind_loop)
        self._loop_ref: asyncio.AbstractEventLoop | None = None
        self._running = False
        if plans is not None:
            self.load(plans)

    # --- state ---------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The state store; a SQLite file is created only when first needed, so a plan file that
        fails to load leaves nothing behind."""
        return self.delivery.store

    def open_state(self, *, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> None:
        """Open the ``state`` file now (else on first need), taking its one-writer lock: raises
        ``StateInUse`` naming the process that holds it, or with ``wait`` waits for it to end."""
        self.delivery.open_state(wait=wait, on_wait=on_wait)

    def close(self) -> None:
        """Flush and close the store (call once, after the last ``run``). Outcomes that could not
        be written are said in ``delivery.failure``, not raised: the run has ended either way."""
        self.delivery.close()

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
        self.catalog.add_vendor(vendor)

    def add_dataset(self, dataset: Dataset, *, fetch: Callable[..., Any] | Fetcher | None = None,
                    sink: Sink | None = None) -> None:
        """Register a dataset with how its tasks run (``fetch``: a callable or a Fetcher; default
        from a ``python:`` api or connector) and where rows go (default: its ``sink`` table)."""
        self.scheduler.add_dataset(dataset, self.catalog.vendors.get(dataset.vendor))
        self.catalog.add_dataset(dataset, fetch, sink)
        self.cursors.learn(dataset.name)
        self.learners.add_dataset(dataset, self.catalog.vendors.get(dataset.vendor))

    def add_plan(self, plan: SyncPlan, *, start: bool = True) -> None:
        """Register a plan; ``start`` begins a run now, and a schedule starts later runs when due."""
        if plan.dataset not in self.catalog.datasets:
            raise UnknownPlan(f"plan {plan.name!r} uses dataset {plan.dataset!r}, which was not added")
        if plan.name in self.catalog.plans:
            raise ValueError(f"plan {plan.name!r} is already added; remove it first")
        self.catalog.add_plan(plan)
        self.progress.set_limit_time(plan.name, functools.partial(self.scheduler.time_for, plan.dataset))
        self._runs.schedule(plan, datetime.fromtimestamp(self._now(), UTC))
        if start:
            self._runs.start(plan, None)
        self._wake.ring()

    def remove_dataset(self, name: str) -> None:
        """Forget a dataset (its plans must be removed first); its opened sink waits in the catalog's
        ``take_removed`` to be closed."""
        self.scheduler.remove_dataset(name)
        self.catalog.remove_dataset(name)
        self.cursors.forget(name)
        self.learners.remove_dataset(name)

    # --- control ops ---------------------------------------------------------------------
    def start_plan(self, name: str, *, hold: PlanState | None = None) -> None:
        """Start the plan now, even if not due; a stopped, paused or failed run continues.
        ``hold`` (paused, stopped): take its run up as it was, dispatching nothing yet."""
        plan = self.catalog.plan(name)
        if self.scheduler.has_plan(name):
            state = self.scheduler.plan_state(name)
            if state in (PlanState.STOPPED, PlanState.PAUSED, PlanState.FAILED):
                self.resume_plan(name)
                return
            if state is PlanState.RUNNING:
                return
        self._runs.start(plan, None, hold=hold)
        self._wake.ring()

    def retry_tasks(self, name: str, task_ids: list[str]) -> int:
        """A new run of just these failed tasks of the plan (its run has ended); returns how many
        it retries (those still failed, with their parameters known)."""
        plan = self.catalog.plan(name)
        state = self.scheduler.plan_state(name) if self.scheduler.has_plan(name) else PlanState.IDLE
        if state in (PlanState.RUNNING, PlanState.PAUSED, PlanState.STOPPED):
            raise IllegalTransition(f"plan {name!r} (a run is going)", state, PlanState.RUNNING)
        records = self.store.failed_tasks(name, task_ids)
        params = [json.loads(r.params) for r in records if r.params]
        if params:
            self._runs.start(plan, None, only=params)
            self._wake.ring()
        return len(params)

    def recall_plan(self, name: str) -> None:
        """Show the plan's last run as the state recorded it (its end, its counts) while none goes."""
        self._runs.recall(self.catalog.plan(name).name)

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
        self._outcomes.end_run(name, RunState.CANCELLED)
        self._wake.ring()
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
        self.catalog.remove_plan(name)
        self._runs.unschedule(name)
        self.emit(PlanEvent(self._now(), name, "removed"))
        self._wake.ring()
        return tasks

    def cancel(self, tasks: Iterable[SyncTask]) -> None:
        self._pool.cancel(tasks)

    def _told(self, name: str, state: str) -> None:
        self.emit(PlanEvent(self._now(), name, state, self._runs.run_id(name)))
        self._wake.ring()

    async def settled(self, tasks: Iterable[SyncTask], timeout: float) -> None:
        """Wait (up to ``timeout``) until these tasks, cancelled or not, have finished ending."""
        await self._pool.settled(tasks, timeout)

    def set_workers(self, workers: int) -> None:
        """Change the number of concurrent slots; fewer slots let running tasks finish first."""
        self._workers = check_workers(workers)
        self._wake.ring()

    @property
    def workers(self) -> int:
        return self._workers

    def in_flight(self) -> int:
        return len(self._pool)

    @property
    def on_ray(self) -> bool:
        """True when tasks run on a Ray cluster (node-scoped limits and labels mean something)."""
        return self._ray is not None

    def plan_state(self, name: str) -> PlanState:
        """Where the plan's run is (with none in this process: how its last run ended, once recalled)."""
        return self._runs.state_of(self.catalog.plan(name).name)

    def next_due(self, name: str) -> datetime | None:
        """When the plan's schedule next starts a run (None: manual, or no time left)."""
        self.catalog.plan(name)
        return self._runs.next_due(name)

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
        await self.delivery.prepare({plan.dataset for plan in self.catalog.plans.values()})
        if self._ray is not None:
            await self._ray.start()
            self.scheduler.set_nodes(self._ray.nodes_up())  # node-scoped limits count per Ray node
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.interrupt)
        self._running = True
        flusher = asyncio.create_task(self.delivery.save_usage_periodically(self.flush_interval))
        try:
            await self._loop(until_idle)
            await self._pool.drain(self.grace, self._now, lambda: self._interrupts >= 2)
        finally:
            self._running = False
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            # Cleanup runs whatever happened; it needs no awaits, so cancellation cannot cut it.
            self._checkpoint(last=True)
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        await self.delivery.wrap_up()
        if self._ray is not None:
            await self._ray.close()
        return self._summary()

    async def _loop(self, until_idle: bool) -> None:
        runs, scheduler, pool = self._runs, self.scheduler, self._pool
        while not self._stopping:
            now = self._now()
            runs.start_due(self.catalog.plans, now)
            capacity = self._workers if self._ray is None else self._workers * max(len(self._ray.workers), 1)
            free = capacity - len(pool)
            if free > 0:
                decision = scheduler.dispatch(now, free)
                self._outcomes.note_skips()
                learners = self.learners if self.learners.by_scope else None  # asked once a turn
                for task in decision.tasks:
                    self._hub.task_started(now, task)
                    if learners is not None:  # a scope learns its limits: it counts what went, and when
                        dataset = self.catalog.datasets[self.catalog.dataset_of(task)]
                        learners.sent(task, dataset.name, now, dataset.weight)
                    pool.start(task)
                for name in decision.finished:
                    self._outcomes.end_run(name, RunState.COMPLETED)
                if self.limiter.lease_starved:  # a scope used its whole allowance: renew the lease now
                    self.delivery.renew_soon()
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
        await self._wake.sleep(timeout)

    def shutdown(self) -> None:
        """Stop dispatching and end ``run()`` gracefully (as a first Ctrl-C does)."""
        self._stopping = True
        self._wake.ring()

    def interrupt(self) -> None:
        """What a signal does: the first is graceful, the second cancels everything at once."""
        self._interrupts += 1
        self.shutdown()
        if self._interrupts >= 2:
            self._pool.cancel(self._pool.tasks())

    def _storage_failed(self, exc: StateUnwritable) -> None:
        """The state cannot be written: say so on every plan, and end at once without grace (the
        outcomes of tasks in flight could not be recorded)."""
        self._heard.say_everywhere(str(exc))
        self._interrupts = max(self._interrupts, 1)
        self.interrupt()

    def _checkpoint(self, last: bool = False) -> None:
        """Save what must survive: buffered outcomes, long-window usage, unfinished runs."""
        ending = self._runs.unfinished() if self._stopping else []
        self.delivery.checkpoint({run.id: self._runs.counts(run.plan) for run in ending}, last=last)

    # --- probes and jobs -------------------------------------------------------------------
    async def probe(self, name: str) -> Probe:
        """Fetch the first task of plan ``name`` once, under its limits, and return what came back;
        nothing is written or recorded. A failure raises ``TaskFailed`` with a run's sentence."""
        plan = self.catalog.plan(name)
        self._bind_loop()
        self.delivery.restore_usage()
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

    # --- helpers -------------------------------------------------------------------------
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        """Take the running loop's clock as the executor's (so a virtual-time loop moves it too).
        uvloop's ``time()`` is the same monotonic clock in whole milliseconds: the limiter needs
        the instant itself, so there the executor reads the clock directly."""
        loop = asyncio.get_running_loop()
        self._loop_ref = self.delivery.loop = loop
        if type(loop).__module__.startswith("uvloop"):
            self._uvloop = loop
        if self._epoch is None:
            self._epoch = time.time() - (time.monotonic() if loop is self._uvloop else loop.time())
        return loop

    def _now(self) -> float:
        """Epoch seconds on the loop's clock (so a virtual-time loop moves the executor too)."""
        loop = self._loop_ref
        if self._epoch is None or loop is None or loop.is_closed():
            return time.time()
        return self._epoch + (time.monotonic() if loop is self._uvloop else loop.time())

    def _summary(self) -> RunSummary:
        summary = RunSummary(interrupted=self._interrupts > 0 or self._stopping, failure=self.delivery.failure,
                             problems=list(self.delivery.sink_failures))
        plans = self.progress.plans
        return self._runs.summary(self.catalog.plans, summary,  # what this process wrote
                                  lambda name: plans[name].rows - plans[name].rows_before if name in plans else 0)
