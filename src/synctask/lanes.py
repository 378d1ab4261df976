"""Plans in a dataset's queue: each run of a plan is a lane that pulls its tasks lazily.

A lane pulls tasks from its plan's parameter grid only when asked, so a plan's size never costs
memory; failed tasks wait in its retry heap until their backoff has passed, then go ahead of
new ones (they are older); tasks a store says are done are skipped a batch at a time. A queue
holds the lanes of one dataset in priority order and the limiter gate they share. Pure: no I/O,
time is an argument.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .limits import AnyGate
from .model import Dataset, PlanState, SyncPlan, SyncTask, TaskState, key_scope, transition
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .lines import Waitlist

__all__ = ["Lane", "Queue", "PlanStats", "DoneAmong", "RunKey", "BUSY", "BUSY_LANE", "SKIP_BUDGET", "one_by_one",
           "READY", "SLEEPING", "PARKED", "IDLE"]

READY, SLEEPING, PARKED, IDLE = "ready", "sleeping", "parked", "idle"  # where a queue is (see ``scheduler``)
SKIP_BUDGET = 1_000  # finished tasks one dispatch skips per lane before it lets the loop go on
_LOOK_MIN = 16  # tasks a resumed lane checks at once when it is finding work (doubles while all are done)
DoneAmong = Callable[[list[str]], Collection[str]]  # which of these task ids are done already
# What a run's task ids carry: nothing (a manual run), the run's key (each scheduled run's work is
# its own), or a function of a task's params (a rolling range: only its newest tasks are).
RunKey = str | Callable[[Mapping[str, Any]], str | None] | None

_PENDING = TaskState.PENDING
_RUNNING_PLAN = PlanState.RUNNING


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


class Lane:
    """One plan's run inside its dataset queue."""

    __slots__ = ("plan", "name", "priority", "order", "queue", "retry", "cursor", "done_among", "ready",
                 "delayed", "running", "state", "total", "done", "failed", "skipped", "skips_told", "retries",
                 "freezes", "dispatched", "next_seq", "on_fatal", "fresh", "upcoming", "look", "run_key",
                 "key_of", "resume")

    def __init__(self, plan: SyncPlan, queue: Queue, order: int, params: Iterable[Mapping[str, Any]],
                 total: int | None, done_among: DoneAmong | None, run_key: RunKey = None,
                 resume: Callable[[str], Mapping[str, Any] | None] | None = None) -> None:
        self.resume = resume
        self.plan = plan
        self.run_key = run_key if not callable(run_key) else None
        self.key_of = run_key if callable(run_key) else None  # a rolling range: the key depends on the task
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
        self.skips_told = 0  # of ``skipped``, how many the executor has told (as events)
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
            key_of = self.key_of
            task = self.fresh = SyncTask(self.name, params, self.priority, self.plan.timeout, self.next_seq,
                                         self.run_key if key_of is None else key_of(params))
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
        key_of = self.key_of
        if key_of is not None:  # a rolling range: only the tasks near its end are each run's own
            batch = [SyncTask(plan, params, priority, timeout, seq + i, key_of(params))
                     for i, params in enumerate(itertools.islice(cursor, self.look))]
        else:
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
            task = SyncTask(self.name, params, self.priority, self.plan.timeout, self.next_seq, done.run_key)
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


class Queue:
    """One dataset's queue: its lanes in priority order and the limiter gate they share."""

    __slots__ = ("name", "dataset", "gate", "weight", "scopes", "lanes", "where", "sleep_token", "paused",
                 "waiting_on", "woken_by", "lines", "held_since")

    def __init__(self, dataset: Dataset, gate: AnyGate, scopes: Sequence[str]) -> None:
        self.name = dataset.name
        self.dataset = dataset
        self.gate = gate
        self.weight = dataset.weight
        self.scopes = {s.split(":", 1)[0]: s for s in scopes}  # "vendor" → "vendor:binance"
        self.lanes: list[Lane] = []
        self.where = IDLE
        self.sleep_token = 0
        self.paused = False
        self.waiting_on: Waitlist | None = None  # the counter's line it waits in (sleeping or parked)
        self.woken_by: Waitlist | None = None  # the line it was just let out of, until its next try
        self.lines: tuple[Waitlist, ...] = ()  # the lines of its gate's counters, in their order
        self.held_since: float | None = None  # when limits began holding back its next task

    def scope_for(self, kind: str | None, key: str | None) -> str:
        """The scope a failure names (``kind``: "vendor", "dataset"; None: the dataset's) for a
        task that took ``key``: with several keys, that key's count at the vendor or dataset."""
        kind = kind or "dataset"
        if key is not None and kind in ("vendor", "dataset", "key"):
            return key_scope(key, self.scopes["vendor" if kind == "key" else kind])
        return self.scopes.get(kind, self.scopes["dataset"])

    def head(self, now: float) -> Lane | None:
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


def one_by_one(skip: Callable[[str], bool]) -> DoneAmong:
    return lambda ids: {task_id for task_id in ids if skip(task_id)}


BUSY = cast(SyncTask, object())  # a lane's answer while it is still skipping finished tasks
BUSY_LANE = cast(Lane, object())
