"""What a failed task leads to: the table in ``errors`` applied to a task, its plan and its scopes.

A rate-limited answer freezes its scope (vendor or dataset) until Retry-After, or one window, and
the task goes back without using an attempt; an exhausted quota pauses the scope until its reset
and asks for a checkpoint; network, timeout and server errors retry with backoff until the
plan's attempts are used up (and connection failures in a row freeze an unreachable vendor);
an invalid request fails its task; a fatal error stops its plan (or every plan) gracefully,
unless it refused one of several keys: that key is set aside and the task goes on with another.
Pure: no I/O, time is an argument.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable
from typing import NamedTuple

from .errors import Failure, OutcomeKind
from .lanes import Lane, Queue
from .limits import Limiter, Quota
from .model import PlanState, SyncTask, TaskState, transition

__all__ = ["Verdict", "Verdicts"]

_PENDING, _RETRY_WAIT = TaskState.PENDING, TaskState.RETRY_WAIT
_FAILED, _CANCELLED = TaskState.FAILED, TaskState.CANCELLED


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
    key_refused: tuple[str, str, tuple[str, ...]] | None = None  # (vendor, key refused and set aside, keys left)


class Verdicts:
    """The failure rules, with what they remember: connection failures in a row per vendor."""

    def __init__(self, limiter: Limiter, freeze: Callable[[Lane | None, str, float, float], bool],
                 all_lanes: Callable[[], list[Lane]], *, default_cooldown: float, quota_cooldown: float,
                 unreachable_after: int,
                 refuse_key: Callable[[str, str], tuple[list[str], bool]] = lambda v, k: ([], False)) -> None:
        self.limiter = limiter
        self._refuse_key = refuse_key  # set a vendor's key aside; the keys left (none: it was the last)
        self._freeze = freeze  # freeze a scope, counted on a lane; True when a freeze began
        self._all_lanes = all_lanes
        self.default_cooldown = default_cooldown
        self.quota_cooldown = quota_cooldown
        self.unreachable_after = unreachable_after
        self._unreachable: dict[str, tuple[int, int]] = {}  # vendor scope → (failures in a row, freezes)

    def succeeded(self, queue: Queue) -> None:
        """A task of ``queue`` succeeded: its vendor answers, so its count of failures starts over."""
        if self._unreachable:
            self._unreachable.pop(queue.scopes.get("vendor", ""), None)

    def failed(self, lane: Lane, task: SyncTask, failure: Failure, now: float) -> Verdict:
        """Apply a failure to its task and lane (the table in ``errors``): what it led to."""
        kind = failure.kind
        if lane.state is PlanState.CANCELLED:
            task.state = transition("task", task.state, _CANCELLED)
            return Verdict(task, _CANCELLED, failure.explain("cancelled the task with its plan"))
        if kind is OutcomeKind.CANCELLED:
            self._requeue(lane, task)
            return Verdict(task, _PENDING, failure.explain("put the task back in its queue"))
        if kind is OutcomeKind.RATE_LIMITED:
            scope = lane.queue.scope_for(failure.scope, task.key)
            wait = failure.retry_after
            if wait is None:
                wait = self._window_of(scope) or self.default_cooldown
            began = self._freeze(lane, scope, now, now + wait)
            self._requeue(lane, task)
            return Verdict(task, _PENDING, failure.explain(
                f"froze {scope} for {wait:g}s and will retry the task without using an attempt"),
                frozen=(scope, now + wait, began))
        if kind is OutcomeKind.QUOTA:
            scope = lane.queue.scope_for(failure.scope, task.key)
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
        if task.key is not None and (failure.scope == "key" or failure.status in (401, 403)):
            vendor = lane.queue.dataset.vendor
            left, new = self._refuse_key(vendor, task.key)
            status = f" (HTTP {failure.status})" if failure.status is not None else ""
            refused = f"the vendor refused key {task.key}{status}"
            if left:
                told = dataclasses.replace(failure, happened=refused,
                                           hint=f"put a valid key in {task.key} and restart synctask to use it again")
                return Verdict(task, _PENDING, told.explain(
                    f"set key {task.key} aside and goes on with {', '.join(left)}"),
                    key_refused=(vendor, task.key, tuple(left)) if new else None)
            failure = dataclasses.replace(failure, happened=refused, hint=f"every key of vendor {vendor} was refused; "
                                          "check them, then start the plan again")
        if lane.on_fatal == "stop_all":
            lanes = self._all_lanes()
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

    def _count_unreachable(self, lane: Lane, failure: Failure, now: float, verdict: Verdict) -> Verdict:
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

    def _requeue(self, lane: Lane, task: SyncTask) -> None:
        task.state = transition("task", task.state, _PENDING)
        heapq.heappush(lane.ready, (task.seq, task))

    def _window_of(self, scope: str) -> float | None:
        windows = [lim.per for lim in self.limiter.limits(scope) if isinstance(lim, Quota)]
        return min(windows) if windows else None
