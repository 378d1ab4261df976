"""Which task runs next: per-dataset queues, fair round-robin, retries, control ops. No I/O.

Theory of operation. Each dataset has one queue; each plan running on it is a *lane* in that queue
(priority first, then the order plans were added; ``lanes``). Every queue is in one place at a
time: ready, asleep until an instant, parked, in a limit counter's waiting line, or idle
(``lines``). ``dispatch(now, slots)`` takes queues from the front of the ready line, admits at
most one task per queue per turn through the queue's limiter gate, and sends a blocked queue to
sleep, to a waiting line or to the park, so a frozen, paused or exhausted queue never delays
another. It returns the tasks to run and the instant to call again. ``report(task, failure,
now)`` applies a task's outcome (see the table in ``errors``) and returns a ``Verdict`` the
executor carries out.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from .errors import Failure, UnknownPlan
from .lanes import BUSY_LANE, IDLE, READY, SKIP_BUDGET, SLEEPING, DoneAmong, Lane, PlanStats, Queue, RunKey, one_by_one
from .limits import AnyGate, Gate, KeyGate, Limit, Limiter, NodeGate
from .lines import Lines
from .model import (
    Dataset,
    PlanState,
    SyncPlan,
    SyncTask,
    TaskState,
    Vendor,
    account_scope,
    key_scope,
    transition,
    vendor_key_scopes,
)
from .verdicts import Verdict, Verdicts
from .windows import Concurrency, WindowUsage

__all__ = ["Scheduler", "Decision", "Held", "Verdict", "PlanStats", "SKIP_BUDGET"]

_PENDING, _RUNNING, _RETRY_WAIT = TaskState.PENDING, TaskState.RUNNING, TaskState.RETRY_WAIT
_DONE, _FAILED, _CANCELLED = TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED
_RUNNING_PLAN = PlanState.RUNNING


@dataclass(frozen=True)
class Decision:
    """What to do now: run ``tasks``; call ``dispatch`` again at ``wake_at`` (None: on an event)."""

    tasks: list[SyncTask]
    wake_at: float | None
    finished: list[str] = field(default_factory=list)  # plans whose run just completed


class Held(NamedTuple):
    """What holds a dataset's next task back: a frozen ``scope`` (``usage`` None) or one of its
    limits that is full; ``until``: when it has room (None: when a task in flight ends)."""

    scope: str
    usage: WindowUsage | None
    until: float | None


class Scheduler:
    """Dataset queues, plan lanes and the dispatch decision; time is always an argument. ``node``:
    this machine's worker node for node-scoped limits (on Ray, ``set_nodes`` counts them per node);
    ``default_cooldown``: the freeze after a 429 without Retry-After on a scope without a window."""

    def __init__(self, limiter: Limiter | None = None, *, node: str | None = None,
                 default_cooldown: float = 10.0, quota_cooldown: float = 3600.0,
                 unreachable_after: int = 5) -> None:
        self.limiter = limiter or Limiter()
        self.node = node or "local"  # node-scoped limits hold on one machine too
        self._queues: dict[str, Queue] = {}
        self._lanes: dict[str, Lane] = {}
        self._in_flight: dict[SyncTask, Lane] = {}
        self._lines = Lines()
        self._verdicts = Verdicts(self.limiter, self._freeze, lambda: list(self._lanes.values()),
                                  default_cooldown=default_cooldown, quota_cooldown=quota_cooldown,
                                  unreachable_after=unreachable_after, refuse_key=self.key_refused)
        self._order = 0
        self._finished: list[str] = []
        self._nodes: list[str] = []  # worker nodes (Ray) for node-scoped limits; empty: this node only
        self._by_key_or_node: dict[str, Vendor] = {}  # datasets whose vendor has node-scoped limits or several keys
        self._refused: dict[str, set[str]] = {}  # vendor -> its keys it refused (401/403)
        # Told how long a dataset's next task was held back by limits (freezes included), each
        # time one goes after waiting: for the limit-wait histogram of ``/metrics``.
        self.on_limit_wait: Callable[[str, float], None] | None = None
        self.before_dispatch: Callable[[float], None] | None = None  # others' waiting requests go first (permits)

    # --- setup ---------------------------------------------------------------------------
    def add_dataset(self, dataset: Dataset, vendor: Vendor | None = None) -> None:
        """Create the dataset's queue and configure the limiter scopes it draws on."""
        if dataset.name in self._queues:
            raise ValueError(f"dataset {dataset.name!r} is already known")
        scopes = dataset.scopes(self.node if vendor is not None and vendor.node_limits else None)
        margin = vendor.margin if vendor is not None else None
        keyed = vendor is not None and bool(vendor.keys)  # several keys: every limit counts per key
        if keyed and vendor is not None and (vendor.learn is not None or dataset.learn is not None):
            raise ValueError(f"dataset {dataset.name!r}: limits cannot be learned with several keys yet; "
                             f"write vendor {vendor.name!r}'s per-key limits")
        if vendor is not None:
            self.limiter.configure(scopes[0], () if keyed else vendor.limits, margin)
            if len(scopes) > 2:
                self.limiter.configure(scopes[2], vendor.node_limits, margin)
        self.limiter.configure(scopes[1], () if keyed else dataset.limits, margin)
        if vendor is not None and keyed:
            self._configure_keys(vendor, dataset)
        gate = self.limiter.gate(scopes, dataset.weight)
        queue = self._queues[dataset.name] = Queue(dataset, gate, scopes[:2] if keyed else scopes)
        if vendor is not None and (vendor.node_limits or keyed):
            self._by_key_or_node[dataset.name] = vendor
            if self._nodes or keyed:
                self._split(queue, vendor)
        self._lines.line_up(queue)

    def _configure_keys(self, vendor: Vendor, dataset: Dataset | None) -> None:
        """Each key's scopes (at the vendor, at ``dataset``) and its account's get their limits."""
        for key in vendor.keys:
            self.limiter.configure(key_scope(key.name, f"vendor:{vendor.name}"), vendor.key_limits(key), vendor.margin)
            if dataset is not None:
                self.limiter.configure(key_scope(key.name, f"dataset:{dataset.name}"), dataset.limits, vendor.margin)
            if key.account is not None:
                self.limiter.configure(account_scope(vendor.name, key.account), vendor.accounts.get(key.account, ()),
                                       vendor.margin)

    def vendor_gate(self, vendor: Vendor) -> AnyGate:
        """The gate a request to ``vendor`` through no dataset passes (another program's, on a
        permit): the vendor's scope, and with several keys each key's own (and its account's)."""
        shared = [f"vendor:{vendor.name}"]
        if not vendor.keys:
            return self.limiter.gate(shared)
        self._configure_keys(vendor, None)
        gate = KeyGate({key.name: self.limiter.gate([*shared, *vendor_key_scopes(vendor, key)])
                        for key in vendor.keys}, vendor.key_order)
        gate.usable &= self._usable_keys(vendor.name, gate.keys)
        return gate

    def relimit(self, scope: str, limits: Sequence[Limit], now: float, seeds: Mapping[float, int],
                margin: float | None = None) -> None:
        """Give ``scope`` new limits (learned ones): a new window's counter starts from what was
        sent in it (``seeds``: window seconds -> sends), and the queues drawing on the scope see
        the new limits at their next try (a queue asleep on an old window wakes when it would
        have, one waiting on a counter that is gone tries again; a freeze holds them all meanwhile)."""
        self.limiter.configure(scope, limits, margin)
        for per, used in seeds.items():
            self.limiter.observe(scope, used, now, per)
        for queue in self._queues.values():
            if scope in queue.scopes.values() and isinstance(queue.gate, Gate):
                queue.gate = self.limiter.gate(list(queue.scopes.values()), queue.weight)
                self._lines.line_up(queue)
                waiting = queue.waiting_on
                if waiting is not None and waiting.counter not in queue.gate.counters:
                    self._lines.poke(queue)  # its counter is gone (a cap that changed): nobody would let it out
        self._lines.forget_unused({id(c) for queue in self._queues.values() for c in queue.gate.counters})

    def set_nodes(self, nodes: Sequence[str]) -> None:
        """The worker nodes tasks may go to (Ray): each dataset whose vendor has node-scoped limits
        then counts them per node, ``node:<node>:vendor:<vendor>``, and each admitted task says its
        node (``task.node``). Call before dispatching (queues must not be waiting in lines)."""
        self._nodes = list(dict.fromkeys(nodes))
        for name, vendor in self._by_key_or_node.items():
            self._split(self._queues[name], vendor)
            self._lines.line_up(self._queues[name])

    def nodes_usable(self, nodes: Collection[str]) -> None:
        """Only these nodes have a worker now: node-limited tasks go to them alone."""
        for name in self._by_key_or_node:
            for gate in _node_gates(self._queues[name].gate):
                gate.usable = set(nodes) & set(gate.nodes)
        for queue in list(self._lines.parked):
            self._lines.poke(queue)

    def key_refused(self, vendor: str, key: str) -> tuple[list[str], bool]:
        """The vendor refused ``key`` (401/403): no task takes it any more; returns the keys left
        and whether this set it aside (False: it was already, or it is the last). The last one is
        not set aside (none left: the plan stops as on any fatal error, and starting it again
        tries that key again)."""
        refused = self._refused.setdefault(vendor, set())
        left = [each.name for each in self._vendor_keys(vendor) if each.name != key and each.name not in refused]
        if not left or key in refused:
            return left, False
        refused.add(key)
        for name, known in self._by_key_or_node.items():
            gate = self._queues[name].gate
            if known.name == vendor and isinstance(gate, KeyGate):
                gate.usable.discard(key)
                self._lines.poke(self._queues[name])
        return left, True

    def keys_refused(self, vendor: str) -> set[str]:
        """The keys of ``vendor`` the vendor refused (set aside until the daemon restarts)."""
        return set(self._refused.get(vendor, ()))

    def _usable_keys(self, vendor: str, keys: Collection[str]) -> set[str]:
        return set(keys) - self._refused.get(vendor, set())

    def _vendor_keys(self, vendor: str) -> tuple[Any, ...]:
        for known in self._by_key_or_node.values():
            if known.name == vendor:
                return known.keys
        return ()

    def _split(self, queue: Queue, vendor: Vendor) -> None:
        """The queue's gate over its vendor's keys (one gate each) and, on Ray with node-scoped
        limits, its worker nodes (one gate per key and node): a task takes one of each."""
        dataset = queue.dataset
        shared = list(dataset.scopes(None))
        by_node = bool(self._nodes and vendor.node_limits)

        def gate_for(extra: Sequence[str]) -> Gate | NodeGate:
            if not by_node:
                here = [dataset.scopes(self.node)[2]] if vendor.node_limits else []
                return self.limiter.gate([*shared, *extra, *here], dataset.weight)
            gates = {}
            for node in self._nodes:
                scope = dataset.scopes(node)[2]
                self.limiter.configure(scope, vendor.node_limits, vendor.margin)
                gates[node] = self.limiter.gate([*shared, *extra, scope], dataset.weight)
            return NodeGate(gates)

        gate: AnyGate
        if vendor.keys:
            keyed = KeyGate({key.name: gate_for(dataset.key_scopes(vendor, key)) for key in vendor.keys},
                            vendor.key_order)
            keyed.usable = self._usable_keys(vendor.name, keyed.keys)
            gate = keyed
        else:
            gate = gate_for(())
        queue.gate = gate
        queue.scopes = {s.split(":", 1)[0]: s for s in shared}
        if by_node:
            self.limiter.forget(dataset.scopes(self.node)[2])  # this machine's count: not used now

    def remove_dataset(self, name: str) -> None:
        """Forget a dataset's queue; its plans must be removed first."""
        self._by_key_or_node.pop(name, None)
        queue = self._queues.get(name)
        if queue is None:
            return
        if queue.lanes:
            raise ValueError(f"dataset {name!r} still has plans: {[lane.name for lane in queue.lanes]}")
        self._lines.drop(queue)
        del self._queues[name]

    def add_plan(self, plan: SyncPlan, params: Iterable[Mapping[str, Any]] | None = None, *,
                 logical_time: datetime | None = None, skip: Callable[[str], bool] | None = None,
                 done_among: DoneAmong | None = None, paused: bool = False, run_key: RunKey = None,
                 resume: Callable[[str], Mapping[str, Any] | None] | None = None) -> None:
        """Start a run of ``plan``: its tasks come lazily from ``params`` (default: its grid bound
        to ``logical_time``); ``skip(task_id)`` true means already done (counted as skipped), and
        ``done_among(ids)`` says the same of many ids at once (a store answers it in one query);
        ``run_key`` goes into task ids so each scheduled run's tasks are new work (a function of a
        task's params: only the tasks it names are, a rolling range's newest); ``resume(id)``
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
            done_among = one_by_one(skip)
        lane = Lane(plan, queue, self._order, params, total, done_among, run_key,
                     resume if done_among else None)
        queue.lanes.append(lane)
        queue.lanes.sort(key=lambda ln: (-ln.priority, ln.order))
        self._lanes[plan.name] = lane
        if paused:
            lane.state = PlanState.PAUSED
        self._lines.poke(queue)

    # --- control ops ---------------------------------------------------------------------
    def pause_plan(self, name: str) -> None:
        """Dispatch no more of the plan's tasks; in-flight ones finish."""
        lane = self._lane(name)
        lane.state = transition(f"plan {name}", lane.state, PlanState.PAUSED)

    def resume_plan(self, name: str) -> None:
        """Go on after a pause, a stop or a fatal error."""
        lane = self._lane(name)
        lane.state = transition(f"plan {name}", lane.state, PlanState.RUNNING)
        self._lines.poke(lane.queue)

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
        self._queues[dataset].paused = True  # nothing from this dataset's queue until resume_dataset

    def resume_dataset(self, dataset: str) -> None:
        queue = self._queues[dataset]
        queue.paused = False
        self._lines.poke(queue)

    def freeze(self, scope: str, until: float) -> None:
        """Admit nothing through ``scope`` before ``until``; queues learn it on their next turn."""
        self.limiter.freeze(scope, until)

    def announced_freeze(self, task: SyncTask, scope: str, now: float, until: float) -> bool:
        """The vendor said (in headers) that ``scope`` has nothing left until ``until``: freeze it,
        counted on the task's plan; True when this began a freeze rather than extending one."""
        return self._freeze(self._lanes.get(task.plan), scope, now, until)

    def _freeze(self, lane: Lane | None, scope: str, now: float, until: float) -> bool:
        """Freeze ``scope`` until ``until``; a freeze that begins (rather than one an answer to a
        request already in flight extends) counts on ``lane``. True when it began."""
        began = self.limiter.frozen_until(scope, now) is None
        self.limiter.freeze(scope, until)
        if began and lane is not None:
            lane.freezes += 1
        return began

    def renewed(self) -> None:
        """The limiter has a new lease (or a scope thawed): every queue may try again."""
        for queue in self._queues.values():
            self._lines.poke(queue)

    def room_freed(self, scope: str, now: float) -> None:
        """A request counted on ``scope`` outside the queues (another program's, on a permit) was
        answered or ended: the queues waiting on its counters go on, as for one of their own."""
        for queue in self._queues.values():
            if scope in queue.scopes.values():
                self._lines.room_changed(queue, now)

    def thaw(self, scope: str) -> None:
        self.limiter.thaw(scope)
        self.renewed()

    # --- the decision --------------------------------------------------------------------
    def dispatch(self, now: float, slots: int) -> Decision:
        """Admit up to ``slots`` tasks at ``now``, one per queue per round-robin turn."""
        if self.before_dispatch is not None:
            self.before_dispatch(now)
        lines = self._lines
        lines.wake_due(now)
        ready = lines.ready
        out: list[SyncTask] = []
        in_flight = self._in_flight
        busy: list[Queue] = []
        while slots > 0 and ready:
            queue = ready.popleft()
            woken_by = queue.woken_by
            if woken_by is not None:  # whatever this try finds, the line moves on (see _next_out)
                queue.woken_by = None
            lane = queue.head(now)
            if lane is BUSY_LANE:
                busy.append(queue)  # still skipping finished work: back in line after this turn
                lines.next_out(woken_by, now)
                continue
            if lane is None:
                queue.held_since = None  # nothing to send (paused, retries not due): not the limits' doing
                self._rest(queue, queue.next_due())
                lines.next_out(woken_by, now)
                continue
            gate = queue.gate
            wake = gate.try_acquire(queue.weight, now)
            if wake is not None:
                if queue.held_since is None:
                    queue.held_since = now
                blocker = gate.blocker
                if blocker is None:
                    self._rest(queue, wake)  # frozen: its own sleep until the freeze ends
                    lines.next_out(woken_by, now)
                else:
                    line = lines.wait_in_line(queue, blocker, wake, woken_by)
                    if line is not woken_by:
                        lines.next_out(woken_by, now)
                continue
            if woken_by is not None:
                lines.next_out(woken_by, now)  # there was room for this one: maybe for the next too
            if queue.held_since is not None:
                if self.on_limit_wait is not None:
                    self.on_limit_wait(queue.name, now - queue.held_since)
                queue.held_since = None
            task = lane.take()
            task.node = gate.chosen
            task.key = gate.key
            task.admitted = now
            task.answered = task.reached = None
            task.state = transition("task", task.state, _RUNNING)
            lane.running.add(task)
            lane.dispatched += 1
            in_flight[task] = lane
            out.append(task)
            slots -= 1
            waiting = lines.line_waiting(queue)
            if waiting is None:
                ready.append(queue)
            else:  # others wait for room this queue needs too: it goes behind them, not ahead
                queue.held_since = now
                lines.join_line(queue, waiting, parked=waiting.where is not SLEEPING)
                lines.next_out(waiting, now)
        finished, self._finished = self._finished, []
        if busy:
            ready.extend(busy)
            return Decision(out, now, finished)  # call again at once, after the loop's other work
        return Decision(out, self.next_wake(), finished)

    def next_wake(self) -> float | None:
        """When a sleeping queue next wakes (None: nothing sleeps; wait for an event)."""
        return self._lines.next_wake()

    @property
    def has_ready(self) -> bool:
        """True when some queue may have a task to send now (dispatch again without waiting)."""
        return bool(self._lines.ready)

    def _rest(self, queue: Queue, until: float | None) -> None:
        if until is None:
            queue.where = IDLE
            self._check_finished(queue)
        else:
            self._lines.rest(queue, until)

    def _check_finished(self, queue: Queue) -> None:
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
            lane.queue.gate.settle(lane.queue.weight, at, task.node, task.key)
            self._lines.room_changed(lane.queue, at)

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
            gate.settle(queue.weight, now, task.node, task.key)
        if gate.has_concurrency:
            gate.release(task.node, task.key)
        self._lines.room_changed(queue, now)
        if failure is None:
            task.state = transition("task", task.state, _DONE)
            lane.done += 1
            verdict = Verdict(task, _DONE)
            self._verdicts.succeeded(queue)
            if follow_up is not None and lane.state is not PlanState.CANCELLED:
                nxt = SyncTask(lane.name, follow_up, lane.priority, lane.plan.timeout, lane.next_seq, task.run_key)
                lane.next_seq += 1
                heapq.heappush(lane.ready, (nxt.seq, nxt))
                if lane.total is not None:
                    lane.total += 1
        else:
            verdict = self._verdicts.failed(lane, task, failure, now)
        if lane.cursor is None and lane.state is _RUNNING_PLAN and lane.exhausted:
            lane.state = transition(f"plan {lane.name}", lane.state, PlanState.COMPLETED)
            verdict = verdict._replace(finished=(lane.name,))
        if queue.where is not READY and queue.waiting_on is None:
            self._lines.poke(queue)  # (a queue in a counter's line goes when the line lets it out)
        return verdict

    # --- looking in ----------------------------------------------------------------------
    def plan_state(self, name: str) -> PlanState:
        return self._lane(name).state

    def stats(self, name: str) -> PlanStats:
        return self._lane(name).stats()

    def skips_untold(self) -> dict[str, int]:
        """Tasks skipped per plan since the last call (cheap: the executor asks every loop turn)."""
        told: dict[str, int] = {}
        for name, lane in self._lanes.items():
            if lane.skipped > lane.skips_told:
                told[name] = lane.skipped - lane.skips_told
                lane.skips_told = lane.skipped
        return told

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
        gate = queue.gate
        if isinstance(gate, KeyGate):  # the keys share the work: as long as one key's share takes
            usable = [k for k in gate.keys if k in gate.usable] or gate.keys
            scopes = gate.gates[usable[0]].scope_names
            return self.limiter.time_for(scopes, math.ceil(tasks / len(usable)) * queue.weight, now)
        return self.limiter.time_for(queue.scopes.values(), tasks * queue.weight, now)

    def held_by(self, dataset: str, now: float) -> Held | None:
        """What keeps the dataset's next task from going at ``now`` (None: one may go): the
        frozen scope, or the full limit with its use, and when there is room (None: when a task
        in flight ends)."""
        queue = self._queues.get(dataset)
        if queue is None:
            return None
        room = queue.gate.earliest(queue.weight, now)
        if room <= now:
            return None
        until = None if room == math.inf else room
        scopes = queue.gate.scope_names if isinstance(queue.gate, KeyGate) else list(queue.scopes.values())
        for scope in scopes:
            frozen = self.limiter.frozen_until(scope, now)
            if frozen is not None:
                return Held(scope, None, frozen)
        for scope in scopes:
            for usage in self.limiter.windows(scope, now):
                need = 1 if isinstance(usage.limit, Concurrency) else queue.weight
                if usage.used + need > usage.capacity:
                    return Held(scope, usage, until)
        return Held(scopes[0] if scopes else dataset, None, until)  # a lease or a node's own limit

    def gate_of(self, dataset: str) -> tuple[AnyGate, int]:
        """The limiter gate a dataset's tasks pass and their weight (to admit a one-off request)."""
        queue = self._queues[dataset]
        return queue.gate, queue.weight

    def queue_state(self, dataset: str) -> str:
        """Where the dataset's queue is: "ready", "sleeping", "parked" or "idle"."""
        return self._queues[dataset].where

    def _lane(self, name: str) -> Lane:
        lane = self._lanes.get(name)
        if lane is None:
            raise UnknownPlan(f"no plan named {name!r} is known to the scheduler")
        return lane

    def _forget(self, lane: Lane) -> None:
        lane.queue.lanes.remove(lane)
        if self._lanes.get(lane.name) is lane:
            del self._lanes[lane.name]



def _node_gates(gate: AnyGate) -> list[NodeGate]:
    """The node gates in ``gate`` (itself, or one per key)."""
    if isinstance(gate, NodeGate):
        return [gate]
    if isinstance(gate, KeyGate):
        return [inner for inner in gate.gates.values() if isinstance(inner, NodeGate)]
    return []
