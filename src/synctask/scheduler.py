"""Which task runs next: per-dataset queues, fair round-robin, retries, control ops. No I/O.

Theory of operation. Each dataset has one queue; each plan running on it is a *lane* in that queue
(priority first, then the order plans were added). A lane pulls tasks lazily from its plan's
parameter grid, so a plan's size never costs memory; failed tasks wait in the lane's retry heap
until their backoff has passed, then go ahead of new tasks.

The scheduler keeps every queue in exactly one place:

* ``ready``: a round-robin line of queues that may have a task to send now;
* ``sleeping``: a heap of queues with nothing to send before a known instant (the limiter's
  answer, a retry's due time, a freeze);
* ``parked``: queues waiting on a concurrency slot or on room held by requests in flight; any
  answer or release puts them back in line;
* ``idle``: queues with no work at all until a control op adds some.

``dispatch(now, slots)`` takes queues from the front of the line, admits at most one task per
queue per turn through the queue's limiter gate, and sends a blocked queue to sleep or to the
park, so a frozen, paused or exhausted queue never delays another. It returns the tasks to run
and the instant to call again. ``report(task, failure, now)`` applies a task's outcome (see the
table in ``errors``) and returns a ``Verdict`` the executor carries out.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, cast

from .errors import Failure, OutcomeKind, UnknownPlan
from .limits import AnyGate, Counter, Limiter, NodeGate, Quota
from .model import Dataset, PlanState, SyncPlan, SyncTask, TaskState, Vendor, transition
from .retry import RetryPolicy

__all__ = ["Scheduler", "Decision", "Verdict", "PlanStats"]

_READY, _SLEEPING, _PARKED, _IDLE = "ready", "sleeping", "parked", "idle"
SKIP_BUDGET = 1_000  # finished tasks one dispatch skips per lane before it lets the loop go on
_LOOK_MIN = 16  # tasks a resumed lane checks at once when it is finding work (doubles while all are done)
DoneAmong = Callable[[list[str]], Collection[str]]  # which of these task ids are done already

_PENDING, _RUNNING, _RETRY_WAIT = TaskState.PENDING, TaskState.RUNNING, TaskState.RETRY_WAIT
_DONE, _FAILED, _CANCELLED = TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED
_RUNNING_PLAN = PlanState.RUNNING


@dataclass(frozen=True)
class Decision:
    """What to do now: run ``tasks``; call ``dispatch`` again at ``wake_at`` (None: on an event)."""

    tasks: list[SyncTask]
    wake_at: float | None
    finished: list[str] = field(default_factory=list)  # plans whose run just completed


class Verdict(NamedTuple):
    """What a task's outcome led to, for the executor to carry out and for people to read.

    ``cancel`` lists in-flight tasks to cancel (a fatal error stops their plan), ``checkpoint``
    asks for the state to be saved now (a quota ran out), ``message`` is the one-sentence
    explanation of a failure (None on success).
    """

    task: SyncTask
    state: TaskState
    message: str | None = None
    cancel: tuple[SyncTask, ...] = ()
    checkpoint: bool = False
    finished: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    frozen: tuple[str, float, bool] | None = None  # (scope, until, is a new freeze) after a freeze


@dataclass(frozen=True)
class PlanStats:
    """A snapshot of one plan's run, for progress displays (``total`` None when unknown)."""

    plan: str
    dataset: str
    state: PlanState
    total: int | None
    done: int
    failed: int
    skipped: int
    in_flight: int
    retries: int
    freezes: int
    dispatched: int

    @property
    def remaining(self) -> int | None:
        if self.total is None:
            return None
        return max(self.total - self.done - self.failed - self.skipped, 0)


class _Lane:
    """One plan's run inside its dataset queue."""

    __slots__ = ("plan", "name", "priority", "order", "queue", "retry", "cursor", "done_among", "ready",
                 "delayed", "running", "state", "total", "done", "failed", "skipped", "retries",
                 "freezes", "dispatched", "next_seq", "on_fatal", "fresh", "upcoming", "look", "run_key",
                 "resume")

    def __init__(self, plan: SyncPlan, queue: _Queue, order: int, params: Iterable[Mapping[str, Any]],
                 total: int | None, done_among: DoneAmong | None, run_key: str | None = None,
                 resume: Callable[[str], Mapping[str, Any] | None] | None = None) -> None:
        self.resume = resume
        self.plan = plan
        self.run_key = run_key
        self.name = plan.name
        self.priority = plan.priority
        self.order = order
        self.queue = queue
        self.retry: RetryPolicy = plan.retry
        self.on_fatal = plan.on_fatal
        self.cursor: Iterator[Mapping[str, Any]] | None = iter(params)
        self.done_among = done_among
        self.fresh: SyncTask | None = None  # the next new task, pulled from the grid but not sent
        self.upcoming: deque[SyncTask] = deque()  # checked against done_among, not done, not yet fresh
        self.look = _LOOK_MIN  # how many grid tasks the next check of done_among takes
        self.ready: list[tuple[int, SyncTask]] = []  # heap by seq: retries due, returned tasks
        self.delayed: list[tuple[float, int, SyncTask]] = []  # heap by due time
        self.running: set[SyncTask] = set()
        self.state = PlanState.RUNNING
        self.total = total
        self.done = self.failed = self.skipped = self.retries = self.freezes = self.dispatched = 0
        self.next_seq = 0

    def head(self, now: float) -> SyncTask | None:
        """The next task of this lane at ``now`` without removing it; None when it has none now;
        ``BUSY`` when it skipped ``SKIP_BUDGET`` finished tasks and should be asked again soon.

        Returned and due retry tasks (in ``ready``, by sequence) go before the next new one
        (``fresh``, pulled from the grid), since they are older."""
        delayed, ready = self.delayed, self.ready
        while delayed and delayed[0][0] <= now:
            _, seq, task = heapq.heappop(delayed)
            task.state = transition("task", task.state, _PENDING)
            heapq.heappush(ready, (seq, task))
        if ready:
            return ready[0][1]
        if self.fresh is not None:
            return self.fresh
        if self.upcoming:
            task = self.fresh = self.upcoming.popleft()
            return task
        cursor = self.cursor
        if cursor is None:
            return None
        if self.done_among is not None:
            return self._check_ahead(cursor)
        for params in cursor:
            task = self.fresh = SyncTask(self.name, params, self.priority, self.plan.timeout, self.next_seq,
                                         self.run_key)
            self.next_seq += 1
            return task
        self.cursor = None
        return None

    def _check_ahead(self, cursor: Iterator[Mapping[str, Any]]) -> SyncTask | None:
        """Pull the next ``look`` tasks from the grid, skip those done (one ``done_among`` call,
        each id computed once), and keep the rest in order in ``upcoming``. ``look`` doubles while
        whole batches are done, up to ``SKIP_BUDGET`` (then ``BUSY``: the loop goes on, and the
        next turn goes on skipping), and falls back as soon as work is found."""
        assert self.done_among is not None
        plan, priority, timeout, run_key, seq = self.name, self.priority, self.plan.timeout, self.run_key, self.next_seq
        batch = [SyncTask(plan, params, priority, timeout, seq + i, run_key)
                 for i, params in enumerate(itertools.islice(cursor, self.look))]
        self.next_seq = seq + len(batch)
        if not batch:
            self.cursor = None
            return None
        done = self.done_among([task.id for task in batch])
        if not done:
            self.upcoming.extend(batch)
            self.look = _LOOK_MIN
        else:
            for task in batch:
                if task.id in done:
                    self.skipped += 1
                    if self.resume is not None:
                        self._resume_after(task)
                else:
                    self.upcoming.append(task)
            self.look = min(self.look * 2, SKIP_BUDGET) if len(done) == len(batch) else _LOOK_MIN
        if self.ready:
            return self.ready[0][1]
        if self.upcoming:
            task = self.fresh = self.upcoming.popleft()
            return task
        return BUSY  # a whole batch was done: let the loop breathe, and go on skipping next turn

    def _resume_after(self, done: SyncTask) -> None:
        """A skipped task had asked for a follow-up (a next page): queue the first one not done."""
        assert self.resume is not None and self.done_among is not None
        params = self.resume(done.id)
        while params is not None:
            task = SyncTask(self.name, params, self.priority, self.plan.timeout, self.next_seq, self.run_key)
            self.next_seq += 1
            if self.total is not None:
                self.total += 1
            if not self.done_among([task.id]):
                heapq.heappush(self.ready, (task.seq, task))
                return
            self.skipped += 1
            params = self.resume(task.id)

    def take(self) -> SyncTask:
        """Remove and return what ``head`` returned."""
        if self.ready:
            return heapq.heappop(self.ready)[1]
        task, self.fresh = self.fresh, None
        assert task is not None
        return task

    def next_due(self) -> float | None:
        return self.delayed[0][0] if self.delayed else None

    @property
    def exhausted(self) -> bool:
        return (self.cursor is None and self.fresh is None and not self.upcoming and not self.ready
                and not self.delayed and not self.running)

    def stats(self) -> PlanStats:
        return PlanStats(self.name, self.queue.name, self.state, self.total, self.done, self.failed,
                         self.skipped, len(self.running), self.retries, self.freezes, self.dispatched)


class _Queue:
    """One dataset's queue: its lanes in priority order and the limiter gate they share."""

    __slots__ = ("name", "dataset", "gate", "weight", "scopes", "lanes", "where", "sleep_token", "paused",
                 "waiting_on", "woken_by", "lines", "held_since")

    def __init__(self, dataset: Dataset, gate: AnyGate, scopes: Sequence[str]) -> None:
        self.name = dataset.name
        self.dataset = dataset
        self.gate = gate
        self.weight = dataset.weight
        self.scopes = {s.split(":", 1)[0]: s for s in scopes}  # "vendor" → "vendor:binance"
        self.lanes: list[_Lane] = []
        self.where = _IDLE
        self.sleep_token = 0
        self.paused = False
        self.waiting_on: _Waitlist | None = None  # the counter's line it waits in (sleeping or parked)
        self.woken_by: _Waitlist | None = None  # the line it was just let out of, until its next try
        self.lines: tuple[_Waitlist, ...] = ()  # the lines of its gate's counters, in their order
        self.held_since: float | None = None  # when limits began holding back its next task

    def head(self, now: float) -> _Lane | None:
        """The lane whose head task goes next at ``now`` (``lane.head`` has it ready), None, or
        ``BUSY_LANE`` while a lane is still skipping finished tasks."""
        if self.paused:
            return None
        for lane in self.lanes:
            if lane.state is _RUNNING_PLAN:
                head = lane.head(now)
                if head is BUSY:
                    return BUSY_LANE
                if head is not None:
                    return lane
        return None

    def next_due(self) -> float | None:
        """The earliest retry due in a running lane (what to sleep until when nothing is ready)."""
        if self.paused:
            return None
        dues = [d for lane in self.lanes if lane.state is PlanState.RUNNING
                if (d := lane.next_due()) is not None]
        return min(dues) if dues else None


def _one_by_one(skip: Callable[[str], bool]) -> DoneAmong:
    return lambda ids: {task_id for task_id in ids if skip(task_id)}


class _Waitlist:
    """The queues waiting for room on one limit counter (a quota or a concurrency cap; a vendor's
    is shared by all its datasets), let out one at a time, first come first out. Waking them all
    when room appears would cost a failed try per waiting queue for each request admitted: with
    thousands of datasets under one vendor limit, thousands of tries per decision."""

    __slots__ = ("counter", "waiters", "where", "sleep_token", "wake_at")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.waiters: deque[tuple[int, _Queue]] = deque()  # (the queue's token when it joined, queue)
        self.where = _IDLE  # _SLEEPING while an entry in the scheduler's heap will let one out
        self.sleep_token = 0
        self.wake_at = math.inf


BUSY = cast(SyncTask, object())  # a lane's answer while it is still skipping finished tasks
BUSY_LANE = cast(_Lane, object())


class Scheduler:
    """Dataset queues, plan lanes and the dispatch decision. Time is always an argument.

    ``node`` names this machine's worker node for node-scoped limits (default ``local``; on Ray,
    ``set_nodes`` counts them per node); ``default_cooldown`` is the freeze after a rate-limit
    answer that gives no Retry-After when the scope has no window to go by.
    """

    def __init__(self, limiter: Limiter | None = None, *, node: str | None = None,
                 default_cooldown: float = 10.0, quota_cooldown: float = 3600.0,
                 unreachable_after: int = 5) -> None:
        self.limiter = limiter or Limiter()
        self.unreachable_after = unreachable_after
        self._unreachable: dict[str, tuple[int, int]] = {}  # vendor scope → (failures in a row, freezes)
        self.node = node or "local"  # node-scoped limits hold on one machine too
        self.default_cooldown = default_cooldown
        self.quota_cooldown = quota_cooldown
        self._queues: dict[str, _Queue] = {}
        self._lanes: dict[str, _Lane] = {}
        self._in_flight: dict[SyncTask, _Lane] = {}
        self._ready: deque[_Queue] = deque()
        self._sleeping: list[tuple[float, int, _Queue | _Waitlist]] = []
        self._parked: list[_Queue] = []  # waiting with no time known and no counter to wait on
        self._waitlists: dict[Counter, _Waitlist] = {}  # by limit counter, one for each
        self._token = 0
        self._order = 0
        self._finished: list[str] = []
        self._nodes: list[str] = []  # worker nodes (Ray) for node-scoped limits; empty: this node only
        self._node_limited: dict[str, Vendor] = {}  # datasets whose vendor has node-scoped limits
        # Told how long a dataset's next task was held back by limits (freezes included), each
        # time one goes after waiting: for the limit-wait histogram of ``/metrics``.
        self.on_limit_wait: Callable[[str, float], None] | None = None

    # --- setup ---------------------------------------------------------------------------
    def add_dataset(self, dataset: Dataset, vendor: Vendor | None = None) -> None:
        """Create the dataset's queue and configure the limiter scopes it draws on."""
        if dataset.name in self._queues:
            raise ValueError(f"dataset {dataset.name!r} is already known")
        scopes = dataset.scopes(self.node if vendor is not None and vendor.node_limits else None)
        margin = vendor.margin if vendor is not None else None
        if vendor is not None:
            self.limiter.configure(scopes[0], vendor.limits, margin)
            if len(scopes) > 2:
                self.limiter.configure(scopes[2], vendor.node_limits, margin)
        self.limiter.configure(scopes[1], dataset.limits, margin)
        gate = self.limiter.gate(scopes, dataset.weight)
        queue = self._queues[dataset.name] = _Queue(dataset, gate, scopes)
        self._line_up(queue)
        if vendor is not None and vendor.node_limits:
            self._node_limited[dataset.name] = vendor
            if self._nodes:
                self._split_by_node(queue, vendor)

    def _line_up(self, queue: _Queue) -> None:
        """The waiting lines of the queue's limit counters (one per counter, shared by queues)."""
        waitlists = self._waitlists
        queue.lines = tuple(waitlists.get(c) or waitlists.setdefault(c, _Waitlist(c)) for c in queue.gate.counters)

    def set_nodes(self, nodes: Sequence[str]) -> None:
        """The worker nodes tasks may go to (Ray): each dataset whose vendor has node-scoped limits
        then counts them per node, ``node:<node>:vendor:<vendor>``, and each admitted task says its
        node (``task.node``). Call before dispatching (queues must not be waiting in lines)."""
        self._nodes = list(dict.fromkeys(nodes))
        for name, vendor in self._node_limited.items():
            self._split_by_node(self._queues[name], vendor)

    def nodes_usable(self, nodes: Collection[str]) -> None:
        """Only these nodes have a worker now: node-limited tasks go to them alone."""
        for name in self._node_limited:
            gate = self._queues[name].gate
            if isinstance(gate, NodeGate):
                gate.usable = set(nodes) & set(gate.nodes)
        for queue in list(self._parked):
            self._poke(queue)

    def _split_by_node(self, queue: _Queue, vendor: Vendor) -> None:
        dataset = queue.dataset
        shared = dataset.scopes(None)
        gates = {}
        for node in self._nodes:
            scopes = dataset.scopes(node)
            self.limiter.configure(scopes[2], vendor.node_limits, vendor.margin)
            gates[node] = self.limiter.gate(scopes, dataset.weight)
        queue.gate = NodeGate(gates)
        queue.scopes = {s.split(":", 1)[0]: s for s in shared}
        self.limiter.forget(dataset.scopes(self.node)[2])  # this machine's count: not used now
        self._line_up(queue)

    def remove_dataset(self, name: str) -> None:
        """Forget a dataset's queue; its plans must be removed first."""
        self._node_limited.pop(name, None)
        queue = self._queues.get(name)
        if queue is None:
            return
        if queue.lanes:
            raise ValueError(f"dataset {name!r} still has plans: {[lane.name for lane in queue.lanes]}")
        if queue.waiting_on is not None:
            queue.waiting_on = None
        elif queue.where is _PARKED:
            self._parked.remove(queue)
        elif queue.where is _READY:
            self._ready.remove(queue)
            if queue.woken_by is not None:
                self._let_out(queue.woken_by)
        queue.where = _IDLE
        queue.sleep_token = -1
        del self._queues[name]

    def add_plan(self, plan: SyncPlan, params: Iterable[Mapping[str, Any]] | None = None, *,
                 logical_time: datetime | None = None, skip: Callable[[str], bool] | None = None,
                 done_among: DoneAmong | None = None, paused: bool = False, run_key: str | None = None,
                 resume: Callable[[str], Mapping[str, Any] | None] | None = None) -> None:
        """Start a run of ``plan``: its tasks come lazily from ``params`` (default: its grid bound
        to ``logical_time``); ``skip(task_id)`` true means already done (counted as skipped), and
        ``done_among(ids)`` says the same of many ids at once (a store answers it in one query);
        ``run_key`` goes into task ids so each scheduled run's tasks are new work; ``resume(id)``
        gives the follow-up a skipped task had asked for, so a resumed paginated run goes on
        from the page it reached."""
        queue = self._queues.get(plan.dataset)
        if queue is None:
            raise UnknownPlan(f"plan {plan.name!r} uses dataset {plan.dataset!r}, which was not added")
        old = self._lanes.get(plan.name)
        if old is not None and not (old.exhausted or old.state is PlanState.CANCELLED):
            raise ValueError(f"plan {plan.name!r} is already running; stop or cancel it first")
        if old is not None:
            self._forget(old)
        total: int | None = None
        if params is None:
            grid = plan.params.bind(logical_time)
            total, params = len(grid), grid
        elif hasattr(params, "__len__"):
            total = len(params)  # type: ignore[arg-type]
        self._order += 1
        if skip is not None and done_among is None:
            done_among = _one_by_one(skip)
        lane = _Lane(plan, queue, self._order, params, total, done_among, run_key,
                     resume if done_among else None)
        queue.lanes.append(lane)
        queue.lanes.sort(key=lambda ln: (-ln.priority, ln.order))
        self._lanes[plan.name] = lane
        if paused:
            lane.state = PlanState.PAUSED
        self._poke(queue)

    # --- control ops ---------------------------------------------------------------------
    def pause_plan(self, name: str) -> None:
        """Dispatch no more of the plan's tasks; in-flight ones finish."""
        lane = self._lane(name)
        lane.state = transition(f"plan {name}", lane.state, PlanState.PAUSED)

    def resume_plan(self, name: str) -> None:
        """Go on after a pause, a stop or a fatal error."""
        lane = self._lane(name)
        lane.state = transition(f"plan {name}", lane.state, PlanState.RUNNING)
        self._poke(lane.queue)

    start_plan = resume_plan

    def stop_plan(self, name: str) -> list[SyncTask]:
        """Dispatch no more; returns the in-flight tasks for the caller to cancel. When they are
        reported as cancelled they return to pending, so a later start continues where it was."""
        lane = self._lane(name)
        lane.state = transition(f"plan {name}", lane.state, PlanState.STOPPED)
        return list(lane.running)

    def cancel_plan(self, name: str) -> list[SyncTask]:
        """End the run as cancelled: drop pending work; returns in-flight tasks to cancel."""
        lane = self._lane(name)
        lane.state = transition(f"plan {name}", lane.state, PlanState.CANCELLED)
        lane.cursor = None
        if lane.fresh is not None:
            lane.fresh.state = transition("task", lane.fresh.state, _CANCELLED)
            lane.fresh = None
        for task in lane.upcoming:
            task.state = transition("task", task.state, _CANCELLED)
        lane.upcoming.clear()
        for _, task in lane.ready:
            task.state = transition("task", task.state, _CANCELLED)
        for _, _, task in lane.delayed:
            task.state = transition("task", task.state, _CANCELLED)
        lane.ready.clear()
        lane.delayed.clear()
        return list(lane.running)

    def remove_plan(self, name: str) -> list[SyncTask]:
        """Cancel the plan and forget it; returns in-flight tasks to cancel."""
        lane = self._lane(name)
        if lane.state in (PlanState.COMPLETED, PlanState.CANCELLED):
            running = list(lane.running)
        else:
            running = self.cancel_plan(name)
        self._forget(lane)
        return running

    def pause_dataset(self, dataset: str) -> None:
        """Dispatch nothing from this dataset's queue until ``resume_dataset``."""
        self._queues[dataset].paused = True

    def resume_dataset(self, dataset: str) -> None:
        queue = self._queues[dataset]
        queue.paused = False
        self._poke(queue)

    def freeze(self, scope: str, until: float) -> None:
        """Admit nothing through ``scope`` before ``until``; queues learn it on their next turn."""
        self.limiter.freeze(scope, until)

    def announced_freeze(self, task: SyncTask, scope: str, now: float, until: float) -> bool:
        """The vendor said (in headers) that ``scope`` has nothing left until ``until``: freeze it,
        counted on the task's plan; True when this began a freeze rather than extending one."""
        return self._freeze(self._lanes.get(task.plan), scope, now, until)

    def _freeze(self, lane: _Lane | None, scope: str, now: float, until: float) -> bool:
        """Freeze ``scope`` until ``until``; a freeze that begins (rather than one an answer to a
        request already in flight extends) counts on ``lane``. True when it began."""
        began = self.limiter.frozen_until(scope, now) is None
        self.limiter.freeze(scope, until)
        if began and lane is not None:
            lane.freezes += 1
        return began

    def thaw(self, scope: str) -> None:
        self.limiter.thaw(scope)
        self._poke_all()

    # --- the decision --------------------------------------------------------------------
    def dispatch(self, now: float, slots: int) -> Decision:
        """Admit up to ``slots`` tasks at ``now``, one per queue per round-robin turn."""
        sleeping, ready = self._sleeping, self._ready
        while sleeping and sleeping[0][0] <= now:
            _, token, item = heapq.heappop(sleeping)
            if item.where is _SLEEPING and item.sleep_token == token:
                if isinstance(item, _Waitlist):
                    item.where = _IDLE
                    self._let_out(item)
                else:
                    item.where = _READY
                    ready.append(item)
        out: list[SyncTask] = []
        in_flight = self._in_flight
        busy: list[_Queue] = []
        while slots > 0 and ready:
            queue = ready.popleft()
            woken_by = queue.woken_by
            if woken_by is not None:  # whatever this try finds, the line moves on (see _next_out)
                queue.woken_by = None
            lane = queue.head(now)
            if lane is BUSY_LANE:
                busy.append(queue)  # still skipping finished work: back in line after this turn
                self._next_out(woken_by, now)
                continue
            if lane is None:
                queue.held_since = None  # nothing to send (paused, retries not due): not the limits' doing
                self._rest(queue, queue.next_due())
                self._next_out(woken_by, now)
                continue
            gate = queue.gate
            wake = gate.try_acquire(queue.weight, now)
            if wake is not None:
                if queue.held_since is None:
                    queue.held_since = now
                blocker = gate.blocker
                if blocker is None:
                    self._rest(queue, wake)  # frozen: its own sleep until the freeze ends
                    self._next_out(woken_by, now)
                else:
                    line = self._wait_in_line(queue, blocker, wake, woken_by)
                    if line is not woken_by:
                        self._next_out(woken_by, now)
                continue
            if woken_by is not None:
                self._next_out(woken_by, now)  # there was room for this one: maybe for the next too
            if queue.held_since is not None:
                if self.on_limit_wait is not None:
                    self.on_limit_wait(queue.name, now - queue.held_since)
                queue.held_since = None
            task = lane.take()
            task.node = gate.chosen
            task.admitted = now
            task.answered = None
            task.state = transition("task", task.state, _RUNNING)
            lane.running.add(task)
            lane.dispatched += 1
            in_flight[task] = lane
            out.append(task)
            slots -= 1
            waiting = self._line_waiting(queue)
            if waiting is None:
                ready.append(queue)
            else:  # others wait for room this queue needs too: it goes behind them, not ahead
                queue.held_since = now
                self._join_line(queue, waiting, parked=waiting.where is not _SLEEPING)
                self._next_out(waiting, now)
        finished, self._finished = self._finished, []
        if busy:
            ready.extend(busy)
            return Decision(out, now, finished)  # call again at once, after the loop's other work
        return Decision(out, self.next_wake(), finished)

    def next_wake(self) -> float | None:
        """When a sleeping queue next wakes (None: nothing sleeps; wait for an event)."""
        sleeping = self._sleeping
        while sleeping:
            _, token, item = sleeping[0]
            if item.where is _SLEEPING and item.sleep_token == token:
                return sleeping[0][0]
            heapq.heappop(sleeping)
        return None

    def _wait_in_line(self, queue: _Queue, counter: Counter, wake: float, woken_by: _Waitlist | None) -> _Waitlist:
        """``queue`` found no room on ``counter`` before ``wake`` (``inf``: until a request in
        flight ends): it joins the counter's line, at the front if it just came out of it."""
        line = self._waitlists[counter]
        self._join_line(queue, line, parked=wake == math.inf, front=line is woken_by)
        if wake != math.inf and (line.where is not _SLEEPING or wake < line.wake_at):
            self._sleep_line(line, wake)
        return line

    @staticmethod
    def _line_waiting(queue: _Queue) -> _Waitlist | None:
        """A line of queues waiting for room on one of the queue's counters, if there is one."""
        for line in queue.lines:
            if line.waiters:
                return line
        return None

    def _join_line(self, queue: _Queue, line: _Waitlist, *, parked: bool, front: bool = False) -> None:
        """``queue`` waits in ``line`` (at its back, or at its ``front`` when it just came out of
        it); ``parked``: no time is known when room comes (shown as such by ``queue_state``)."""
        self._token += 1
        queue.sleep_token = self._token
        queue.waiting_on = line
        queue.where = _PARKED if parked else _SLEEPING
        if front:
            line.waiters.appendleft((self._token, queue))
        else:
            line.waiters.append((self._token, queue))

    def _sleep_line(self, line: _Waitlist, until: float) -> None:
        self._token += 1
        line.where, line.sleep_token, line.wake_at = _SLEEPING, self._token, until
        heapq.heappush(self._sleeping, (until, self._token, line))

    def _let_out(self, line: _Waitlist) -> None:
        """The first queue still waiting in ``line`` goes to the ready queues for a try."""
        waiters = line.waiters
        while waiters:
            token, queue = waiters.popleft()
            if queue.waiting_on is line and queue.sleep_token == token:
                queue.waiting_on = None
                queue.woken_by = line
                queue.where = _READY
                self._ready.append(queue)
                return

    def _next_out(self, line: _Waitlist | None, now: float) -> None:
        """Let the next queue out of ``line`` if its counter has room at ``now``, else wake the
        line when it will (a request's worth): one try per admission, not one per waiting queue."""
        if line is None or not line.waiters or line.where is _SLEEPING:
            return
        at = line.counter.earliest(1, now)
        if at <= now:
            self._let_out(line)
        elif at != math.inf:
            self._sleep_line(line, at)

    def _room_changed(self, queue: _Queue, now: float) -> None:
        """A request of ``queue`` was answered or ended: its counters may have room (or know when
        they will): let the next queue out of each line that waits for one."""
        for line in queue.lines:
            if line.waiters and line.where is not _SLEEPING:
                self._next_out(line, now)
        self._unpark()

    @property
    def has_ready(self) -> bool:
        """True when some queue may have a task to send now (dispatch again without waiting)."""
        return bool(self._ready)

    def _rest(self, queue: _Queue, until: float | None) -> None:
        if until is None:
            queue.where = _IDLE
            self._check_finished(queue)
        elif until == math.inf:
            queue.where = _PARKED
            self._parked.append(queue)
        else:
            self._token += 1
            queue.where = _SLEEPING
            queue.sleep_token = self._token
            heapq.heappush(self._sleeping, (until, self._token, queue))

    def _poke(self, queue: _Queue) -> None:
        if queue.where is not _READY:
            if queue.waiting_on is not None:
                queue.waiting_on = None  # its place in the line is void (a stale entry, skipped)
            elif queue.where is _PARKED:
                self._parked.remove(queue)
            queue.where = _READY
            self._ready.append(queue)

    def _poke_all(self) -> None:
        for queue in self._queues.values():
            self._poke(queue)

    def _check_finished(self, queue: _Queue) -> None:
        for lane in queue.lanes:
            if lane.state is PlanState.RUNNING and lane.exhausted:
                lane.state = transition(f"plan {lane.name}", lane.state, PlanState.COMPLETED)
                self._finished.append(lane.name)

    def answered(self, task: SyncTask, at: float) -> None:
        """The in-flight ``task``'s answer began at ``at`` (its first byte): the vendor has stamped
        it by then, so its sliding windows count it until ``at + per``. Queues waiting on room
        held by requests in flight may go again. A task that never says so (it failed, or it is
        a Python call) is settled when it is reported."""
        lane = self._in_flight.get(task)
        if lane is not None and task.answered is None:
            task.answered = at
            lane.queue.gate.settle(lane.queue.weight, at, task.node)
            self._room_changed(lane.queue, at)

    def _unpark(self) -> None:
        if self._parked:
            for parked in self._parked:
                parked.where = _READY
                self._ready.append(parked)
            self._parked.clear()

    # --- outcomes ------------------------------------------------------------------------
    def report(self, task: SyncTask, failure: Failure | None, now: float,
               follow_up: Mapping[str, Any] | None = None) -> Verdict:
        """Apply a finished task's outcome (None: success, rows durable) and say what it led to.

        ``follow_up`` (with success) is the parameters of one more task the answer asked for,
        such as the next page: it joins the plan's queue ahead of new tasks and counts in its total."""
        lane = self._in_flight.pop(task, None)
        if lane is None:
            raise ValueError(f"task {task.id} is not in flight")
        lane.running.discard(task)
        queue = lane.queue
        gate = queue.gate
        if task.answered is None:
            task.answered = now
            gate.settle(queue.weight, now, task.node)
        if gate.has_concurrency:
            gate.release(task.node)
        self._room_changed(queue, now)
        if failure is None:
            task.state = transition("task", task.state, _DONE)
            lane.done += 1
            verdict = Verdict(task, _DONE)
            if self._unreachable:
                self._unreachable.pop(queue.scopes.get("vendor", ""), None)
            if follow_up is not None and lane.state is not PlanState.CANCELLED:
                nxt = SyncTask(lane.name, follow_up, lane.priority, lane.plan.timeout, lane.next_seq, lane.run_key)
                lane.next_seq += 1
                heapq.heappush(lane.ready, (nxt.seq, nxt))
                if lane.total is not None:
                    lane.total += 1
        else:
            verdict = self._apply(lane, task, failure, now)
        if lane.cursor is None and lane.state is _RUNNING_PLAN and lane.exhausted:
            lane.state = transition(f"plan {lane.name}", lane.state, PlanState.COMPLETED)
            verdict = verdict._replace(finished=(lane.name,))
        if queue.where is not _READY and queue.waiting_on is None:
            self._poke(queue)  # (a queue in a counter's line goes when the line lets it out)
        return verdict

    def _apply(self, lane: _Lane, task: SyncTask, failure: Failure, now: float) -> Verdict:
        kind = failure.kind
        if lane.state is PlanState.CANCELLED:
            task.state = transition("task", task.state, _CANCELLED)
            return Verdict(task, _CANCELLED, failure.explain("cancelled the task with its plan"))
        if kind is OutcomeKind.CANCELLED:
            self._requeue(lane, task)
            return Verdict(task, _PENDING, failure.explain("put the task back in its queue"))
        if kind is OutcomeKind.RATE_LIMITED:
            scope = lane.queue.scopes.get(failure.scope or "dataset", lane.queue.scopes["dataset"])
            wait = failure.retry_after
            if wait is None:
                wait = self._window_of(scope) or self.default_cooldown
            began = self._freeze(lane, scope, now, now + wait)
            self._requeue(lane, task)
            return Verdict(task, _PENDING, failure.explain(
                f"froze {scope} for {wait:g}s and will retry the task without using an attempt"),
                frozen=(scope, now + wait, began))
        if kind is OutcomeKind.QUOTA:
            scope = lane.queue.scopes.get(failure.scope or "dataset", lane.queue.scopes["dataset"])
            until = now + failure.retry_after if failure.retry_after is not None else None
            if until is None:
                reset = self.limiter.next_reset(scope, now)
                until = reset if reset is not None and reset > now else now + self.quota_cooldown
            began = self._freeze(lane, scope, now, until)
            self._requeue(lane, task)
            return Verdict(task, _PENDING, failure.explain(
                f"paused {scope} for {until - now:g}s until its quota resets and saved a checkpoint"),
                checkpoint=True, frozen=(scope, until, began))
        if kind.retryable:
            task.attempt += 1
            if lane.retry.should_retry(task.attempt):
                delay = lane.retry.delay(task.attempt, failure.retry_after)
                task.state = transition("task", task.state, _RETRY_WAIT)
                heapq.heappush(lane.delayed, (now + delay, task.seq, task))
                lane.retries += 1
                verdict = Verdict(task, _RETRY_WAIT, failure.explain(
                    f"will retry in {delay:.2f}s (attempt {task.attempt + 1} of {lane.retry.attempts})"))
            else:
                task.state = transition("task", task.state, _FAILED)
                lane.failed += 1
                verdict = Verdict(task, _FAILED, failure.explain(
                    f"gave up after {task.attempt} attempts and marked the task failed"))
            if kind is OutcomeKind.NETWORK:
                return self._count_unreachable(lane, failure, now, verdict)
            return verdict
        if kind is OutcomeKind.INVALID:
            task.attempt += 1  # one try, and it counted: the request will never work
            task.state = transition("task", task.state, _FAILED)
            lane.failed += 1
            return Verdict(task, _FAILED, failure.explain("marked the task failed; the plan goes on"))
        # Fatal: the task is not to blame; it returns to pending and its plan (or all) stops.
        self._requeue(lane, task)
        if lane.on_fatal == "stop_all":
            lanes = list(self._lanes.values())
        elif failure.scope == "dataset":  # the dataset itself is broken (its sink): all its plans
            lanes = list(lane.queue.lanes)
        else:
            lanes = [lane]
        cancel: list[SyncTask] = []
        stopped: list[str] = []
        for other in lanes:
            if other.state in (PlanState.RUNNING, PlanState.PAUSED):
                other.state = transition(f"plan {other.name}", other.state, PlanState.FAILED)
                cancel.extend(other.running)
                stopped.append(other.name)
        names = ", ".join(stopped) or lane.name
        what = "stopped every plan" if lane.on_fatal == "stop_all" else f"stopped plan {names}"
        return Verdict(task, _PENDING, failure.explain(f"{what} gracefully, keeping finished work"),
                       cancel=tuple(cancel), stopped=tuple(stopped))

    def _count_unreachable(self, lane: _Lane, failure: Failure, now: float, verdict: Verdict) -> Verdict:
        """Connection failures in a row, with no success between, on one vendor: at
        ``unreachable_after`` of them the vendor is frozen (10 s, doubling each time it is still
        down, at most 5 min), so its tasks stop spending attempts and the live line says so at
        once. Failures of requests that were on their way when it froze do not count again."""
        scope = lane.queue.scopes.get("vendor")
        if scope is None or self.limiter.frozen_until(scope, now) is not None:
            return verdict
        failures, trips = self._unreachable.get(scope, (0, 0))
        failures += 1
        if failures < self.unreachable_after:
            self._unreachable[scope] = (failures, trips)
            return verdict
        trips += 1
        self._unreachable[scope] = (0, trips)
        pause = min(10.0 * 2 ** (trips - 1), 300.0)
        began = self._freeze(lane, scope, now, now + pause)
        message = (f"cannot reach the vendor: {self.unreachable_after} connection failures in a row "
                   f"({failure.detail}); synctask froze {scope} for {pause:g}s and then tries again; check the "
                   "network, the vendor's base_url, or its status page")
        return verdict._replace(message=message, frozen=(scope, now + pause, began))

    def _requeue(self, lane: _Lane, task: SyncTask) -> None:
        task.state = transition("task", task.state, _PENDING)
        heapq.heappush(lane.ready, (task.seq, task))

    def _window_of(self, scope: str) -> float | None:
        windows = [lim.per for lim in self.limiter.limits(scope) if isinstance(lim, Quota)]
        return min(windows) if windows else None

    # --- looking in ----------------------------------------------------------------------
    def plan_state(self, name: str) -> PlanState:
        return self._lane(name).state

    def stats(self, name: str) -> PlanStats:
        return self._lane(name).stats()

    def skipped_counts(self) -> dict[str, int]:
        """Tasks skipped so far per plan (cheap: the executor asks every loop turn)."""
        return {name: lane.skipped for name, lane in self._lanes.items() if lane.skipped}

    def has_waiting_plans(self) -> bool:
        """True while some plan could still go on: running, or paused/stopped awaiting a control op."""
        waiting = (PlanState.RUNNING, PlanState.PAUSED, PlanState.STOPPED)
        return any(lane.state in waiting for lane in self._lanes.values())

    def all_stats(self) -> list[PlanStats]:
        return [lane.stats() for lane in self._lanes.values()]

    def in_flight(self, name: str | None = None) -> list[SyncTask]:
        if name is None:
            return list(self._in_flight)
        return list(self._lane(name).running)

    def plans(self) -> list[str]:
        return list(self._lanes)

    def has_plan(self, name: str) -> bool:
        return name in self._lanes

    def time_for(self, dataset: str, tasks: int, now: float) -> float:
        """The least time the dataset's quotas need to admit ``tasks`` more of its tasks from ``now``."""
        queue = self._queues[dataset]
        return self.limiter.time_for(queue.scopes.values(), tasks * queue.weight, now)

    def gate_of(self, dataset: str) -> tuple[AnyGate, int]:
        """The limiter gate a dataset's tasks pass and their weight (to admit a one-off request)."""
        queue = self._queues[dataset]
        return queue.gate, queue.weight

    def queue_state(self, dataset: str) -> str:
        """Where the dataset's queue is: "ready", "sleeping", "parked" or "idle"."""
        return self._queues[dataset].where

    def _lane(self, name: str) -> _Lane:
        lane = self._lanes.get(name)
        if lane is None:
            raise UnknownPlan(f"no plan named {name!r} is known to the scheduler")
        return lane

    def _forget(self, lane: _Lane) -> None:
        lane.queue.lanes.remove(lane)
        if self._lanes.get(lane.name) is lane:
            del self._lanes[lane.name]

