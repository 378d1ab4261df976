"""SyncTaskExecutor: carries out the scheduler's decisions with real time and real workers.

Theory of operation. One loop owns all decisions. Each turn it starts plans that are due, asks
the scheduler for as many tasks as there are free worker slots, launches each in its own asyncio
task (with its timeout), and then sleeps until the next thing that can change the answer: the
instant the scheduler names (a limit admits, a retry is due, a freeze ends), the next scheduled
plan, or a wake-up from a finished task or a control op. It never polls.

A worker fetches, writes the rows to the dataset's sink (which returns only once they are
durable), and only then reports the outcome to the scheduler and records it in the store; the
records of one loop turn are committed together at its end (group commit), so a kill -9
forgets at most what was still in flight. Control ops act on one plan through the
scheduler and cancel only that plan's asyncio tasks, so other plans keep their pace.

Shutdown: the first SIGINT/SIGTERM stops dispatching and gives in-flight tasks ``grace`` seconds;
the rest are cancelled (they return to pending), the store is flushed, long-window quota usage
and the runs' states are saved. A second signal cancels at once and still saves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import math
import signal
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import PlanFile
from .connectors import CONNECTORS, Observation
from .connectors.base import Page
from .connectors.streamed import RowStream
from .disk import failure_words
from .errors import Failure, JobFailed, SinkMoved, StorageFailed, SyncError, TaskFailed, UnknownPlan, classify
from .events import Event, FreezeEvent, PlanEvent, SkipEvent, StreamEvent, TaskEvent
from .fetchers import Fetcher, PythonFetcher, resolve_callable
from .fetchers.base import Streamed
from .grid import ParamGrid
from .limits import Limit, Limiter
from .model import Dataset, PlanState, RunState, SyncPlan, SyncTask, TaskState, Vendor, check_workers
from .pool import LocalRunner, Runner, TaskPool
from .progress import Progress
from .redact import SECRETS
from .retry import RetryPolicy
from .schedule import parse_schedule
from .scheduler import Scheduler, Verdict
from .sinks import Sink, describe_identity, open_sink, rows_of, sink_identity, sink_place
from .store import MemoryStore, RunRecord, SQLiteStore, StateUnwritable, Store, TaskRecord

if TYPE_CHECKING:
    from .fetchers.sessions import SessionPool

_log = logging.getLogger("synctask")

__all__ = ["SyncTaskExecutor", "RunSummary", "Probe"]

_EVENT_BUFFER = 10_000
_SINKS = "sinks"  # the state-store key of where each dataset's sink wrote
_DONE_IN_MEMORY = 500_000  # about 50 MB of ids at most
_EVENT_KIND = {TaskState.DONE: "done", TaskState.FAILED: "failed", TaskState.RETRY_WAIT: "retry",
               TaskState.PENDING: "requeued", TaskState.CANCELLED: "cancelled"}


@dataclass
class RunSummary:
    """What ``run()`` did: per plan counts, whether it was interrupted, what to type to resume."""

    interrupted: bool = False
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure: str | None = None  # why the run had to end at once (the state could not be written)
    problems: list[str] = field(default_factory=list)  # sinks that could not be closed


@dataclass
class Probe:
    """What one task's first request brought back: its parameters, rows, and the next page's."""

    params: dict[str, Any]
    rows: list[Mapping[str, Any]]
    next_params: Mapping[str, Any] | None


@dataclass
class _Run:
    id: str
    plan: str
    logical_time: datetime


class SyncTaskExecutor:
    """The engine: plans in, tasks run under exact limits, outcomes recorded durably.

    ``workers`` is the number of concurrent task slots (``set_workers`` changes it while running);
    ``store`` (or ``state``, a SQLite path) keeps outcomes; ``grace`` is how long in-flight tasks
    may finish after the first interrupt.
    """

    def __init__(
        self,
        plans: PlanFile | None = None,
        *,
        workers: int = 16,
        store: Store | None = None,
        state: str | Path | None = None,
        base_dir: str | Path | None = None,
        grace: float = 10.0,
        flush_interval: float = 0.2,
        node: str | None = None,
        margin: float = 0.0,
        ray: str | None = None,
        ray_workers: int | None = None,
    ) -> None:
        check_workers(workers)
        self.limiter = Limiter(margin=margin)
        self.scheduler = Scheduler(self.limiter, node=node)
        self._store: Store | None = store if store is not None else (None if state else MemoryStore())
        self._state_path = Path(state) if state else None
        self.progress = Progress()
        self.base_dir = Path(base_dir) if base_dir else Path.cwd()
        self.grace = grace
        self.flush_interval = flush_interval
        self._workers = workers
        self._vendors: dict[str, Vendor] = {}
        self._datasets: dict[str, Dataset] = {}
        self._fetchers: dict[str, Fetcher] = {}
        self._sinks: dict[str, Sink] = {}        # given by the caller: theirs to close
        self._sink_specs: dict[str, Mapping[str, Any]] = {}  # from plan files: ours, opened per run
        self._opened: dict[str, Sink] = {}
        self._closing: list[Sink] = []  # sinks of removed datasets, closed with the others
        self._sessions: SessionPool | None = None
        self._plans: dict[str, SyncPlan] = {}
        self._due: dict[str, datetime] = {}
        self._runs: dict[str, _Run] = {}
        self._fetch_specs: dict[str, tuple[Any, ...]] = {}  # how a node makes each dataset's fetcher
        self._ray = None
        runner: Runner = LocalRunner(self._fetchers, self._dataset_of)
        local = runner
        if ray is not None:
            from .distributed import RayRunner

            runner = self._ray = RayRunner(
                ray, slots=workers, actors=ray_workers, fetch_spec=self._fetch_specs.__getitem__,
                dataset_of=self._dataset_of, answered=self._answered, lost=self._worker_lost, clock=self._now,
                observed=self._observed, nodes_changed=self.scheduler.nodes_usable, local=local)
        self._pool = TaskPool(runner, self._deliver, self._finish)
        self._subscribers: list[asyncio.Queue[Event]] = []
        self._listeners: list[Callable[[Event], None]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._interrupts = 0
        self._epoch: float | None = None
        self._loop_ref: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._job_results: dict[str, dict[int, Any]] = {}
        self._job_failures: dict[str, dict[str, str]] = {}
        self._run_done: dict[str, asyncio.Future[str]] = {}
        self._usage_restored = False
        self._commit_due = False
        self.storage_failure: str | None = None  # set when the state could not be written: the run ended
        self.sink_failures: list[str] = []  # sinks that could not be closed (a full disk at the end)
        self._noticed: set[tuple[str, str | None]] = set()
        if plans is not None:
            self.load(plans)

    @property
    def store(self) -> Store:
        """The state store; a SQLite file is created only when first needed, so a plan file that
        fails to load leaves nothing behind."""
        if self._store is None:
            self.open_state()
        assert self._store is not None
        return self._store

    def open_state(self, *, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> None:
        """Open the ``state`` file now (else on first need), taking its one-writer lock: raises
        ``StateInUse`` naming the process that holds it, or with ``wait`` waits for it to end."""
        if self._store is None:
            assert self._state_path is not None
            self._store = SQLiteStore(self._state_path, wait=wait, on_wait=on_wait)

    def check_sinks(self, refetch: Collection[str] = ()) -> None:
        """Compare each loaded plan's sink with the one its finished tasks wrote to (kept in the
        state): a sink that moved would skip every finished task and miss their rows, so it raises
        ``SinkMoved`` naming both places, unless the dataset is in ``refetch`` (its plans'
        finished tasks are then forgotten and fetched again into the new place). A sink that is
        the state file itself raises too. The places are then kept for the next run."""
        known: dict[str, Any] = dict(self.store.setting(_SINKS) or {})
        state = Path(self._state_path).resolve() if self._state_path is not None else None
        moved = []
        for name in dict.fromkeys(plan.dataset for plan in self._plans.values()):
            spec = self._sink_specs.get(name)
            identity = sink_identity(name, spec, self.base_dir) if spec else None
            if identity is None:
                continue
            if state is not None and identity["path"] in {f"{state}{end}" for end in ("", "-wal", "-shm", ".lock")}:
                raise SinkMoved(f"the sink of dataset {name!r} is the state file {state}: its rows would destroy "
                                "the state; give the sink a path of its own")
            plans = [plan.name for plan in self._plans.values() if plan.dataset == name]
            before = known.get(name)
            if name in refetch:
                for plan in plans:
                    self.store.forget_plan(plan)
            elif before is not None and before != identity:
                done = sum(self.store.task_states(plan).get("done", 0) for plan in plans)
                if done:
                    moved.append(f"dataset {name!r} now writes to {describe_identity(identity)}, but the rows of its "
                                 f"{done:,} finished tasks are in {describe_identity(before)}; they would be skipped "
                                 f"and the new place would miss them. Put the sink back, move the data there, or run "
                                 f"again with --refetch {name} to fetch them again into the new place")
                    continue
            known[name] = identity
        if moved:
            raise SinkMoved("; ".join(moved))
        self.store.save_setting(_SINKS, known)

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
        self._vendors[vendor.name] = vendor

    def add_dataset(self, dataset: Dataset, *, fetch: Callable[..., Any] | Fetcher | None = None,
                    sink: Sink | None = None) -> None:
        """Register a dataset with how its tasks run (``fetch``: a callable or a Fetcher; default
        from a ``python:`` api or connector) and where rows go (default: its ``sink`` table)."""
        vendor = self._vendors.get(dataset.vendor)
        self.scheduler.add_dataset(dataset, vendor)
        self._datasets[dataset.name] = dataset
        self._fetchers[dataset.name] = self._make_fetcher(dataset, vendor, fetch)
        if self._ray is not None:
            from .distributed.ray_pool import remote_spec

            self._fetch_specs[dataset.name] = remote_spec(dataset, vendor, fetch)
        if sink is not None:
            self._sinks[dataset.name] = sink
        elif dataset.sink:
            self._sink_specs[dataset.name] = dataset.sink
            open_sink(dataset.name, dataset.sink, self.base_dir, check_only=True)

    def _make_fetcher(self, dataset: Dataset, vendor: Vendor | None, fetch: Any) -> Fetcher:
        if fetch is not None:
            return fetch if hasattr(fetch, "fetch") else PythonFetcher(fetch)
        for where, spec in ((f"datasets.{dataset.name}.api", dataset.api),
                            (f"vendors.{dataset.vendor}.connector", vendor.connector if vendor else "")):
            if spec.startswith("python:"):
                try:
                    return PythonFetcher(resolve_callable(spec))
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None
        name = vendor.connector if vendor else "?"
        if vendor is not None and name == "websocket":
            from .fetchers.websocket import WebSocketFetcher

            base = (vendor.base_url or "").rstrip("/")
            url = base + str(dataset.options.get("path", "/ws"))
            def streamed(task: SyncTask, messages: int, rows: int, position: dict[str, int]) -> None:
                self.store.save_position(task.id, position)
                self._emit(StreamEvent(self._now(), task.plan, task.id, messages, rows))

            return WebSocketFetcher(vendor.name, url, self._http, lambda: self._sink(dataset.name),
                                    int(dataset.options.get("batch", 100)), on_flush=streamed,
                                    resume=lambda task: self.store.position(task.id),
                                    on_answered=self._answered, clock=self._now)
        if vendor is not None and name in CONNECTORS:
            from .fetchers.http import http_fetcher

            return http_fetcher(vendor, dataset, self._http, self._observed, self._now, self._answered)
        raise SyncError(
            f"dataset {dataset.name!r}: connector {name!r} is not available; use "
            f"{', '.join(repr(c) for c in [*CONNECTORS, 'websocket'])} "
            "or a Python task (api = \"python:package.module:function\")"
        )

    @property
    def _http(self) -> SessionPool:
        """The HTTP client sessions, made when the first network fetcher is (aiohttp loads then)."""
        if self._sessions is None:
            from .fetchers.sessions import SessionPool

            self._sessions = SessionPool()
        return self._sessions

    def _observed(self, task: SyncTask, observation: Observation, now: float) -> None:
        """The vendor's own count of what we used (rate-limit headers), on this process or a node."""
        plan = self._plans.get(task.plan)
        dataset = self._datasets.get(plan.dataset) if plan else None
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
            self._emit(FreezeEvent(now, task.plan, scope, until, message, new))

    def _answered(self, task: SyncTask, at: float) -> None:
        """A fetcher got the first byte of the task's answer: its windows count it until ``at``
        plus their length, and queues waiting on that room may go on."""
        self.scheduler.answered(task, at)
        self._wake.set()

    def add_plan(self, plan: SyncPlan, *, start: bool = True) -> None:
        """Register a plan; ``start`` begins a run now, and a schedule starts later runs when due."""
        if plan.dataset not in self._datasets:
            raise UnknownPlan(f"plan {plan.name!r} uses dataset {plan.dataset!r}, which was not added")
        if plan.name in self._plans:
            raise ValueError(f"plan {plan.name!r} is already added; remove it first")
        self._plans[plan.name] = plan
        self.progress.set_limit_time(plan.name, functools.partial(self.scheduler.time_for, plan.dataset))
        due = plan.schedule.next_due(self._now_dt()) if plan.schedule.kind != "manual" else None
        if due is not None:
            self._due[plan.name] = due
        if start:
            self._start_run(plan, None)
        self._wake.set()

    # --- control ops ---------------------------------------------------------------------
    def start_plan(self, name: str) -> None:
        """Start the plan now, even if not due; a stopped, paused or failed run continues."""
        plan = self._plan(name)
        if self.scheduler.has_plan(name):
            state = self.scheduler.plan_state(name)
            if state in (PlanState.STOPPED, PlanState.PAUSED, PlanState.FAILED):
                self.scheduler.resume_plan(name)
                self._emit(PlanEvent(self._now(), name, "running", self._run_id(name)))
                self._wake.set()
                return
            if state is PlanState.RUNNING:
                return
        self._start_run(plan, None)
        self._wake.set()

    def pause_plan(self, name: str) -> None:
        """Dispatch no more of the plan's tasks; in-flight tasks finish."""
        self._plan(name)
        self.scheduler.pause_plan(name)
        self._emit(PlanEvent(self._now(), name, "paused", self._run_id(name)))
        self._wake.set()

    def resume_plan(self, name: str) -> None:
        self._plan(name)
        self.scheduler.resume_plan(name)
        self._emit(PlanEvent(self._now(), name, "running", self._run_id(name)))
        self._wake.set()

    def stop_plan(self, name: str) -> list[SyncTask]:
        """Dispatch no more; cancel in-flight tasks (they return to pending). Returns them."""
        self._plan(name)
        tasks = self.scheduler.stop_plan(name)
        self._cancel_tasks(tasks)
        self._emit(PlanEvent(self._now(), name, "stopped", self._run_id(name)))
        self._wake.set()
        return tasks

    def cancel_plan(self, name: str) -> list[SyncTask]:
        """Stop and end the run as cancelled."""
        self._plan(name)
        tasks = self.scheduler.cancel_plan(name)
        self._cancel_tasks(tasks)
        self._end_run(name, RunState.CANCELLED)
        self._wake.set()
        return tasks

    def remove_plan(self, name: str) -> list[SyncTask]:
        """Cancel the plan and forget it (its finished work stays recorded)."""
        self._plan(name)
        tasks: list[SyncTask] = []
        if self.scheduler.has_plan(name):
            if self.scheduler.plan_state(name) not in (PlanState.CANCELLED, PlanState.COMPLETED) and name in self._runs:
                tasks = self.cancel_plan(name)
            else:
                tasks = self.scheduler.in_flight(name)
            self.scheduler.remove_plan(name)
        self._cancel_tasks(tasks)
        self._plans.pop(name, None)
        self._due.pop(name, None)
        self._emit(PlanEvent(self._now(), name, "removed"))
        self._wake.set()
        return tasks

    def remove_vendor(self, name: str) -> None:
        """Forget a vendor no dataset uses. Its limits' counts stay with the limiter: a vendor
        added again at once must still see what was sent in its windows."""
        users = [d.name for d in self._datasets.values() if d.vendor == name]
        if users:
            raise ValueError(f"vendor {name!r} is still used by datasets {users}")
        self._vendors.pop(name, None)

    def vendors(self) -> list[Vendor]:
        """The vendors added, in the order they were added."""
        return list(self._vendors.values())

    async def close_removed(self) -> None:
        """Close now the sinks of datasets removed meanwhile: nothing writes to them any more, and
        nothing of theirs is touched later (not even at shutdown)."""
        closing, self._closing = self._closing, []
        await self._close_each([("", sink) for sink in closing])

    def remove_dataset(self, name: str) -> None:
        """Forget a dataset (its plans must be removed first); ``close_removed`` closes its sink."""
        self.scheduler.remove_dataset(name)
        self._datasets.pop(name, None)
        self._fetchers.pop(name, None)
        self._sink_specs.pop(name, None)
        opened = self._opened.pop(name, None)
        if opened is not None:
            self._closing.append(opened)

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

    def _capacity(self) -> int:
        """Tasks that may be in flight: ``workers``, or on Ray ``workers`` per live actor."""
        if self._ray is None:
            return self._workers
        return self._workers * max(len(self._ray.workers), 1)

    def in_flight(self) -> int:
        return len(self._pool)

    def plan_state(self, name: str) -> PlanState:
        self._plan(name)
        if not self.scheduler.has_plan(name):
            return PlanState.IDLE
        return self.scheduler.plan_state(name)

    def plan(self, name: str) -> SyncPlan:
        """The plan named ``name`` (``UnknownPlan`` when there is none)."""
        return self._plan(name)

    def dataset(self, name: str) -> Dataset:
        """The dataset named ``name`` (``UnknownPlan`` when there is none)."""
        found = self._datasets.get(name)
        if found is None:
            raise UnknownPlan(f"no dataset named {name!r}; known: {', '.join(self._datasets) or 'none'}")
        return found

    def next_due(self, name: str) -> datetime | None:
        """When the plan's schedule next starts a run (None: manual, or no time left)."""
        self._plan(name)
        return self._due.get(name)

    def plans(self) -> list[SyncPlan]:
        """The plans added, in the order they were added."""
        return list(self._plans.values())

    def datasets(self) -> list[Dataset]:
        """The datasets added, in the order they were added."""
        return list(self._datasets.values())

    # --- events --------------------------------------------------------------------------
    def listen(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback`` with every event as it happens, in the engine's loop (keep it quick);
        returns the function that stops it. Unlike ``events()`` nothing is ever dropped."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    async def events(self) -> AsyncIterator[Event]:
        """Every event from now on, in order. A consumer that falls 10,000 events behind loses
        the oldest ones rather than slowing the engine down."""
        queue: asyncio.Queue[Event] = asyncio.Queue(_EVENT_BUFFER)
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    def _emit(self, event: Event) -> None:
        if SECRETS and (message := getattr(event, "message", None)):  # the last guard for secrets
            masked = SECRETS(message)
            if masked != message:
                event = dataclasses.replace(event, message=masked)  # type: ignore[call-arg]
        self.progress.observe(event)
        for callback in self._listeners:
            try:
                callback(event)
            except Exception:  # a listener's failure (a closed pipe, a bug) must not stop the engine
                _log.warning("an event listener failed and was removed", exc_info=True)
                # A new list: this loop goes on over the old one, so the others still hear it.
                self._listeners = [c for c in self._listeners if c is not callback]
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    # --- the loop ------------------------------------------------------------------------
    async def run(self, *, until_idle: bool = True, handle_signals: bool = False) -> RunSummary:
        """Drive the plans. ``until_idle``: return when no plan has work left (burst mode);
        otherwise run until ``shutdown()`` or a signal. ``handle_signals`` installs the
        SIGINT/SIGTERM handlers (first: graceful, second: immediate)."""
        loop = self._bind_loop()
        self._restore_usage()
        await self._recover_sinks()
        if self._ray is not None:
            await self._ray.start()
            self.scheduler.set_nodes(self._ray.nodes_up())  # node-scoped limits count per Ray node
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.interrupt)
        self._running = True
        flusher = asyncio.create_task(self._flush_periodically())
        try:
            await self._loop(until_idle)
            await self._drain()
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
        await self._close_sinks()
        if self._ray is not None:
            await self._ray.close()
        return self._summary()

    async def _loop(self, until_idle: bool) -> None:
        while not self._stopping:
            now = self._now()
            self._start_due_plans()
            capacity = self._capacity()
            free = capacity - len(self._pool)
            if free > 0:
                decision = self.scheduler.dispatch(now, free)
                self._note_skips()
                for task in decision.tasks:
                    self._launch(task)
                for name in decision.finished:
                    self._end_run(name, RunState.COMPLETED)
                wake_at = decision.wake_at
                if decision.tasks and self.scheduler.has_ready and len(self._pool) < capacity:
                    await asyncio.sleep(0)  # let workers start; more may be admissible right now
                    continue
            else:
                wake_at = self.scheduler.next_wake()
            if until_idle and self._idle():
                return
            for due in self._due.values():
                instant = due.timestamp()
                wake_at = instant if wake_at is None else min(wake_at, instant)
            await self._sleep_until(wake_at)

    async def _sleep_until(self, wake_at: float | None) -> None:
        self._wake.clear()
        timeout = None if wake_at is None else max(wake_at - self._now(), 0.0)
        if timeout == 0.0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _idle(self) -> bool:
        """Burst mode is over when nothing runs and no plan could go on: paused and stopped plans
        wait for a control op, so they keep ``run()`` going; completed, failed and cancelled don't."""
        return not len(self._pool) and not self.scheduler.has_waiting_plans()

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

    async def _drain(self) -> None:
        """After the loop: let in-flight tasks finish within the grace period, then cancel."""
        await self._pool.drain(self.grace, self._now, lambda: self._interrupts >= 2)

    # --- runs ----------------------------------------------------------------------------
    def _start_due_plans(self) -> None:
        if not self._due:
            return
        now_dt = self._now_dt()
        for name, due in list(self._due.items()):
            if due > now_dt:
                continue
            plan = self._plans[name]
            nxt = plan.schedule.next_due(due)
            if nxt is None:
                del self._due[name]
            else:
                self._due[name] = nxt
            if self.scheduler.has_plan(name) and self.scheduler.plan_state(name) in (
                    PlanState.RUNNING, PlanState.PAUSED, PlanState.STOPPED):
                continue  # the previous run is still going; this due time is skipped
            self._start_run(plan, due)

    def _start_run(self, plan: SyncPlan, logical_time: datetime | None) -> None:
        now = self._now()
        scheduled = logical_time is not None
        logical = logical_time or self._now_dt()
        run_key = logical.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") if scheduled else None
        last = self.store.last_run(plan.name)
        if not scheduled and last is not None and last.state in ("running", "interrupted", "failed"):
            run_id = last.id  # a manual plan continues its unfinished run
        else:
            run_id = f"{plan.name}:{run_key or datetime.fromtimestamp(now, UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"
        grid = plan.params.bind(logical)
        done_among = self._skipper(plan.name)
        resume = self.store.follow_up if done_among is not None and self.store.has_follow_ups(plan.name) else None
        self.scheduler.add_plan(plan, grid, done_among=done_among, run_key=run_key, resume=resume)
        self._runs[plan.name] = _Run(run_id, plan.name, logical)
        self.store.start_run(RunRecord(run_id, plan.name, logical.isoformat(), now, "running"))
        self._emit(PlanEvent(now, plan.name, "running", run_id, total=len(grid)))

    def _skipper(self, plan: str) -> Callable[[list[str]], Collection[str]] | None:
        """How to tell finished tasks, asked about a batch of ids at a time: nothing to check on a
        first run, a set in memory when the plan has up to ``_DONE_IN_MEMORY`` finished tasks,
        else the store (one query per batch: bounded memory at any plan size)."""
        self.store.flush()
        done = self.store.done_ids(plan, _DONE_IN_MEMORY)
        if done is None:
            return self.store.done_among
        return done.intersection if done else None

    def _end_run(self, name: str, state: RunState, message: str | None = None) -> None:
        run = self._runs.get(name)
        if run is None:
            return
        if name not in self._job_results:
            with self._storing():
                self.store.end_run(run.id, state.value, self._now(), self._stats(name))
        self._emit(PlanEvent(self._now(), name, state.value, run.id, message=message))
        future = self._run_done.get(name)
        if future is not None and not future.done():
            future.set_result(state.value)

    def _note_skips(self) -> None:
        for plan, skipped in self.scheduler.skipped_counts().items():
            seen = self.progress.plans.get(plan)
            if seen is not None and skipped > seen.skipped:
                total = self.scheduler.stats(plan).total
                self._emit(SkipEvent(self._now(), plan, skipped - seen.skipped, total))

    # --- workers -------------------------------------------------------------------------
    def _launch(self, task: SyncTask) -> None:
        if self._listeners or self._subscribers:
            self._emit(TaskEvent(self._now(), task.plan, "started", task.id))
        else:  # nobody else listens: no event object per task, only the count of tasks in flight
            self.progress.started(task.plan)
        self._pool.start(task)

    def _worker_lost(self, message: str, tasks: list[SyncTask]) -> None:
        """A Ray worker died: say so on each plan that had tasks on it (they go back to their queues)."""
        for plan in sorted({task.plan for task in tasks}):
            if self.scheduler.has_plan(plan):
                self._emit(PlanEvent(self._now(), plan, self.scheduler.plan_state(plan).value, self._run_id(plan),
                                     message=message))

    def _dataset_of(self, task: SyncTask) -> str:
        plan = self._plans.get(task.plan)
        return plan.dataset if plan else ""

    async def _deliver(self, task: SyncTask, result: Any) -> tuple[int, Mapping[str, Any] | None]:
        """The master's half of a task: a page's notice told, its rows durably in the sink (or
        kept for its job); returns the rows written and the next page's parameters."""
        follow_up = None
        if isinstance(result, Page):
            if result.notice is not None:
                self._notice(task.plan, result.notice)
            follow_up, result = result.next_params, result.rows
        return await self._write(task, self._dataset_of(task), result), follow_up

    async def _write(self, task: SyncTask, dataset: str, result: Any) -> int:
        """Hand the result to the sink (durable when this returns) or keep it for its job."""
        job = self._job_results.get(task.plan)
        if job is not None:
            job[task.seq] = result
            return 0
        if isinstance(result, Streamed):
            return 0  # a stream wrote (and reported) its rows itself, batch by batch
        if isinstance(result, RowStream):  # a large answer: parsed and written a batch at a time
            batches = result.batches()
            written = 0
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                await self._to_sink(dataset, batch)
                written += len(batch)
            return written
        rows = rows_of(result)
        if not rows:
            return 0
        await self._to_sink(dataset, rows)
        return len(rows)

    async def _to_sink(self, dataset: str, rows: Sequence[Mapping[str, Any]]) -> None:
        try:
            sink = self._sink(dataset)
            if sink is not None:
                await sink.write(rows)
        except SyncError:
            raise
        except Exception as exc:  # the disk, not the vendor: say so, and stop spending requests
            place = sink_place(dataset, self._sinks.get(dataset) or self._opened.get(dataset),
                               self._sink_specs.get(dataset, {}), self.base_dir)
            raise StorageFailed(f"writing to {place} failed: {failure_words(exc, place)}") from exc

    def _notice(self, plan: str, message: str) -> None:
        """Tell people once per plan and run about something odd in an answer (a plan event)."""
        run = self._runs.get(plan)
        key = (plan, run.id if run else None)
        if key in self._noticed or not self.scheduler.has_plan(plan):
            return
        self._noticed.add(key)
        self._emit(PlanEvent(self._now(), plan, self.scheduler.plan_state(plan).value, self._run_id(plan),
                             message=message))

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
        run = self._runs.get(task.plan)
        state = verdict.state
        job_failures = self._job_failures.get(task.plan)
        if job_failures is not None:
            if state is TaskState.FAILED or verdict.stopped:
                job_failures[f"mini-task {task.seq} {dict(task.params)}"] = verdict.message or "failed"
        elif state in (TaskState.DONE, TaskState.FAILED) and run is not None:
            follow = json.dumps(dict(follow_up), default=str) if follow_up is not None else None
            self._record(TaskRecord(task.id, task.plan, run.id, state.value, task.attempt, verdict.message, now,
                                    follow))
        if self._listeners or self._subscribers:
            self._emit(TaskEvent(now, task.plan, _EVENT_KIND[state], task.id, verdict.message, rows, more,
                                 task.attempt))
        else:  # nobody else listens: progress counts it without an event object per task
            self.progress.ended(task.plan, _EVENT_KIND[state], now, verdict.message, rows, more)
        if verdict.frozen is not None:
            scope, until, new = verdict.frozen
            self._emit(FreezeEvent(now, task.plan, scope, until, verdict.message or "", new))
        if verdict.cancel:
            self._cancel_tasks(list(verdict.cancel))
        for name in verdict.stopped:
            self._end_run(name, RunState.FAILED, verdict.message)
        if verdict.checkpoint:
            self._checkpoint()
        for name in verdict.finished:
            self._end_run(name, RunState.COMPLETED)

    def _cancel_tasks(self, tasks: Iterable[SyncTask]) -> None:
        self._pool.cancel(tasks)

    # --- durability ----------------------------------------------------------------------
    def _record(self, record: TaskRecord) -> None:
        """Buffer an outcome and commit it at the end of this loop turn, with every other outcome
        of the turn (group commit): a kill -9 forgets at most tasks still in flight, never one
        whose rows were written a turn ago."""
        self.store.record(record)
        if not self._commit_due:
            self._commit_due = True
            loop = self._loop_ref
            if loop is not None and not loop.is_closed():
                loop.call_soon(self._commit)
            else:
                self._commit()

    def _commit(self) -> None:
        self._commit_due = False
        with self._storing():
            self.store.flush()

    @contextlib.contextmanager
    def _storing(self) -> Iterator[None]:
        """Around every write to the state: when it fails, end the run at once (what it did next
        could not be remembered, so it would spend requests twice), saying where and why."""
        try:
            yield
        except StateUnwritable as exc:
            self._storage_failed(exc)

    def _storage_failed(self, exc: StateUnwritable) -> None:
        if self.storage_failure is not None:
            return
        self.storage_failure = str(exc)
        for name, run in self._runs.items():
            if self.scheduler.has_plan(name):
                self._emit(PlanEvent(self._now(), name, self.scheduler.plan_state(name).value, run.id,
                                     message=str(exc)))
        self._stopping = True
        self._interrupts = max(self._interrupts, 2)  # no grace: their outcomes could not be recorded
        self._pool.cancel(self._pool.tasks())
        self._wake.set()

    async def _flush_periodically(self) -> None:
        """Quota usage about every second, so a process killed with -9 and restarted still knows
        what it sent (outcomes are committed each loop turn, by ``_record``). A huge log (a
        sliding day of sends) takes longer to export: then it is saved less often, keeping the
        cost near 1% of time."""
        loop = asyncio.get_running_loop()
        next_usage = loop.time() + 1.0
        while True:
            await asyncio.sleep(self.flush_interval)
            if loop.time() >= next_usage:
                started = time.perf_counter()
                with self._storing():
                    self.store.save_usage(self.limiter.export_usage(self._now()))
                next_usage = loop.time() + max(1.0, 100 * (time.perf_counter() - started))

    def _checkpoint(self) -> None:
        """Save what must survive: buffered outcomes, long-window usage, unfinished runs."""
        with self._storing():
            self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        self.store.flush()
        self.store.save_usage(self.limiter.export_usage(self._now()))
        if self._stopping:
            for name, run in self._runs.items():
                if self.scheduler.has_plan(name) and self.scheduler.plan_state(name) in (
                        PlanState.RUNNING, PlanState.PAUSED, PlanState.STOPPED):
                    self.store.end_run(run.id, RunState.INTERRUPTED.value, self._now(), self._stats(name))

    def _restore_usage(self) -> None:
        if not self._usage_restored:
            self.limiter.restore_usage(self.store.load_usage(), self._now())
            self._usage_restored = True

    async def _recover_sinks(self) -> None:
        """Before anything is fetched, let each sink of a plan repair what a killed process left
        (an interrupted Parquet compaction, stray temporary files), even if nothing is new."""
        datasets = {plan.dataset for plan in self._plans.values()}
        for dataset in sorted(datasets):
            if dataset not in self._sinks and self._sink_specs.get(dataset, {}).get("kind") != "parquet":
                continue  # only Parquet leaves anything to repair; others stay closed until used
            sink = self._sink(dataset)
            recover = getattr(sink, "recover", None)
            if recover is not None:
                await recover()

    def _sink(self, dataset: str) -> Sink | None:
        sink = self._sinks.get(dataset) or self._opened.get(dataset)
        if sink is None and dataset in self._sink_specs:
            sink = open_sink(dataset, self._sink_specs[dataset], self.base_dir)
            if sink is not None:
                self._opened[dataset] = sink
        return sink

    async def _close_sinks(self) -> None:
        """End of a run: close the sinks this executor opened (the next run opens them again)."""
        if self._sessions is not None:
            await self._sessions.close()
        opened, self._opened, closing, self._closing = self._opened, {}, self._closing, []
        await self._close_each([*opened.items(), *(("", sink) for sink in closing)])

    async def _close_each(self, sinks: list[tuple[str, Sink]]) -> None:
        for dataset, sink in sinks:
            try:
                await sink.close()
            except Exception as exc:  # the disk, at the end: say where and why, keep the others closing
                place = sink_place(dataset, sink, self._sink_specs.get(dataset, {}), self.base_dir)
                self.sink_failures.append(f"closing {place} failed: {failure_words(exc, place)}; the rows written "
                                          "before are kept, and the next run tidies the sink again")

    def close(self) -> None:
        """Flush and close the store (call once, after the last ``run``). Outcomes that could not
        be written are said in ``storage_failure``, not raised: the run has ended either way."""
        if self._store is not None:
            try:
                self._store.close()
            except StateUnwritable as exc:
                self.storage_failure = self.storage_failure or str(exc)

    # --- probing a plan ------------------------------------------------------------------
    async def probe(self, name: str) -> Probe:
        """Fetch the first task of plan ``name`` once, under its limits (waiting if they say so),
        and return what came back; nothing is written and nothing is recorded. A failure raises
        ``TaskFailed`` with the sentence a run would have said."""
        plan = self._plan(name)
        self._bind_loop()
        self._restore_usage()
        params = next(iter(plan.params.bind(self._now_dt())), None)
        if params is None:
            raise SyncError(f"plan {name!r} has no tasks to probe")
        task = SyncTask(plan.name, params, plan.priority, plan.timeout)
        gate, weight = self.scheduler.gate_of(plan.dataset)
        while (when := gate.try_acquire(weight, self._now())) is not None:
            if when == math.inf:
                raise SyncError(f"plan {name!r}: its concurrency limit is full")
            await asyncio.sleep(when - self._now())
        try:
            result = await self._fetchers[plan.dataset].fetch(task)
        except Exception as exc:
            failure = classify(exc=exc)
            raise TaskFailed(task.id, failure, SECRETS(failure.explain("stopped the probe"))) from None
        finally:
            gate.settle(weight, self._now(), gate.chosen)
            gate.release(gate.chosen)
            if self._sessions is not None:
                await self._sessions.close()
        follow_up = None
        if isinstance(result, Page):
            follow_up, result = result.next_params, result.rows
        return Probe(dict(params), rows_of(result), follow_up)

    # --- jobs: the general master/worker API ---------------------------------------------
    async def submit_job(
        self,
        split: Iterable[Any] | Callable[[], Iterable[Any]],
        execute: Callable[[Any], Any],
        aggregate: Callable[[list[Any]], Any] = list,
        *,
        name: str | None = None,
        priority: int = 0,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        limits: Sequence[Limit] = (),
        vendor: str | None = None,
    ) -> Any:
        """Divide work into mini-tasks (``split``), run ``execute(item)`` for each under the same
        limits, priorities, timeouts, retries and control ops as plans, and return
        ``aggregate(results)`` with results in split order. Raises ``JobFailed`` naming each
        failed mini-task and why. The job is a plan named ``name`` while it runs."""
        items = list(split() if callable(split) else split)
        name = name or f"job-{next(_job_counter)}"
        dataset_name = f"job:{name}"
        if vendor is not None and vendor not in self._vendors:
            raise UnknownPlan(f"job {name!r} names vendor {vendor!r}, which was not added")
        dataset = Dataset(dataset_name, vendor or f"job:{name}", dataset_name, tuple(limits))
        self.scheduler.add_dataset(dataset, self._vendors.get(vendor) if vendor else None)
        self._datasets[dataset_name] = dataset
        self._fetchers[dataset_name] = PythonFetcher(execute, single_argument=True)
        self._fetch_specs[dataset_name] = ("callable", execute, True)
        params = [dict(item) if isinstance(item, Mapping) else {"item": item} for item in items]
        plan = SyncPlan(name, dataset_name, ParamGrid({}), parse_schedule("manual"), priority, timeout,
                        retry or RetryPolicy())
        self._plans[name] = plan
        results: dict[int, Any] = {}
        self._job_results[name] = results
        self._job_failures[name] = {}
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._run_done[name] = done
        self._runs[name] = _Run(f"{name}:job", name, self._now_dt())
        self.progress.set_limit_time(name, functools.partial(self.scheduler.time_for, dataset_name))
        self.scheduler.add_plan(plan, params)
        self._emit(PlanEvent(self._now(), name, "running", f"{name}:job", total=len(params)))
        self._wake.set()
        driver = None if self._running else asyncio.create_task(self.run(until_idle=True))
        try:
            outcome = await done
        finally:
            if self.scheduler.has_plan(name) and self.scheduler.plan_state(name) is not PlanState.COMPLETED:
                self._cancel_tasks(self.scheduler.remove_plan(name))
            if driver is not None:
                await driver
            self._job_results.pop(name, None)
            self._run_done.pop(name, None)
            self._forget_job(name, dataset_name)
        failures = self._job_failures.pop(name, {})
        if outcome != "completed" or failures:
            if not failures:
                failures = {name: f"the job ended {outcome}"}
            raise JobFailed(name, failures, len(params))
        if len(results) != len(params):
            raise JobFailed(name, {name: "some mini-tasks produced no result"}, len(params))
        return aggregate([results[i] for i in range(len(params))])

    def _forget_job(self, name: str, dataset: str) -> None:
        if self.scheduler.has_plan(name):
            self.scheduler.remove_plan(name)
        self.scheduler.remove_dataset(dataset)
        self._plans.pop(name, None)
        self._runs.pop(name, None)
        self._datasets.pop(dataset, None)
        self._fetchers.pop(dataset, None)
        self._fetch_specs.pop(dataset, None)

    # --- helpers -------------------------------------------------------------------------
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        """Take the running loop's clock as the executor's (so a virtual-time loop moves it too)."""
        loop = asyncio.get_running_loop()
        self._loop_ref = loop
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

    def _plan(self, name: str) -> SyncPlan:
        plan = self._plans.get(name)
        if plan is None:
            raise UnknownPlan(f"no plan named {name!r}; known: {', '.join(self._plans) or 'none'}")
        return plan

    def _run_id(self, name: str) -> str | None:
        run = self._runs.get(name)
        return run.id if run else None

    def _stats(self, name: str) -> dict[str, Any]:
        s = self.scheduler.stats(name)
        return {"done": s.done, "failed": s.failed, "skipped": s.skipped, "retries": s.retries,
                "freezes": s.freezes, "total": s.total}

    def _summary(self) -> RunSummary:
        summary = RunSummary(interrupted=self._interrupts > 0 or self._stopping, failure=self.storage_failure,
                             problems=list(self.sink_failures))
        for name in self._plans:
            if self.scheduler.has_plan(name):
                state = self.scheduler.plan_state(name).value
                if summary.interrupted and state in ("running", "paused", "stopped"):
                    state = "interrupted"  # it did not end: the next run goes on from here
                summary.plans[name] = {**self._stats(name), "state": state,
                                       "rows": self.progress.plans[name].rows if name in self.progress.plans else 0}
        return summary


_job_counter = itertools.count(1)
