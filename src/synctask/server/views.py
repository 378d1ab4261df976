"""What the API shows of the executor: plans, limits, failed and in-flight tasks, as JSON-ready
dicts with times in ISO 8601 and no secret. Shared by the handlers and the event stream."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import UnknownPlan
from ..executor import SyncTaskExecutor
from ..history import iso
from ..model import SyncTask, scope_key, scope_parts
from ..redact import SECRETS
from ..store import TaskRecord

__all__ = ["plan_view", "scopes_view", "task_row", "running_row", "live_counts", "masked"]


def masked(text: str | None) -> str | None:
    return SECRETS(text) if SECRETS and text else text


def plan_view(executor: SyncTaskExecutor, name: str, now: float | None = None) -> dict[str, Any]:
    """What a person wants to see of one plan: state, counts, pace, ETA, freeze, what it waits
    on, next run."""
    now = time.time() if now is None else now
    state = executor.plan_state(name).value
    p = executor.progress.snapshot(name, now)
    view: dict[str, Any] = {
        "name": name, "state": state, "dataset": executor.catalog.plan(name).dataset,
        "total": p.total, "done": p.done, "failed": p.failed, "skipped": p.skipped, "in_flight": p.in_flight,
        "retries": p.retries, "freezes": p.freezes, "rows": p.rows, "rate": round(p.rate, 3),
        "messages": p.messages,  # a stream plan's messages received (its rate is messages a second)
        "eta_seconds": None if p.eta is None else round(p.eta, 1),
        "frozen_until": iso(p.frozen_until, precise=True),
        "last_message": masked(p.last_message), "run_id": p.run_id, "next_due": None,
        "waiting": _waiting(executor, name, state, p.remaining, p.in_flight, now),
        "started_at": iso(p.started_at),
    }
    due = executor.next_due(name)
    if due is not None:
        view["next_due"] = due.astimezone().isoformat(timespec="seconds")
    return view


def _waiting(executor: SyncTaskExecutor, name: str, state: str, remaining: int | None, in_flight: int,
             now: float) -> dict[str, Any] | None:
    """Why a running plan with tasks to send sends none now: which limit is full, and when it has room."""
    if state != "running" or (remaining is not None and remaining <= in_flight):
        return None
    dataset = executor.catalog.plan(name).dataset
    try:
        held = executor.scheduler.held_by(dataset, now)
    except KeyError:
        return None
    if held is None:
        return None
    frozen = executor.limiter.frozen_until(held.scope, now)
    if frozen is not None:
        reason, said = "frozen", f"{held.scope} frozen"
    elif held.usage is not None:
        reason, said = "limit", f"{held.scope} {held.usage.describe()}"
    else:
        reason, said = "limit", f"{held.scope}: its allowance until the next save is used"
    return {"reason": reason, "scope": held.scope, "text": said, "room_at": iso(held.until, precise=True)}


def scopes_view(executor: SyncTaskExecutor, freezes: dict[str, str]) -> list[dict[str, Any]]:
    """Each limited scope (a vendor's, a dataset's, a node's) with each limit's live use, said as
    a person says it, and its freeze or ban with the reason."""
    now = time.time()
    scopes = []
    for scope in executor.limiter.scopes():
        frozen = executor.limiter.frozen_until(scope, now)
        limits = [{"limit": str(w.limit), "used": w.used, "capacity": w.capacity, "resets_at": iso(w.resets_at),
                   "text": w.describe()} for w in executor.limiter.windows(scope, now)]
        if not limits and frozen is None:
            continue
        vendor, key = vendor_of(executor, scope), scope_key(scope)
        view: dict[str, Any] = {"scope": scope, "vendor": vendor, "node": scope_parts(scope)[2], "key": key,
                                "key_refused": key is not None and key in executor.scheduler.keys_refused(vendor or ""),
                                "limits": limits, "frozen_until": iso(frozen, precise=True), "freeze": None,
                                "learned": executor.learners.describe(scope)}
        if frozen is not None:
            message = freezes.get(scope, "")
            view["freeze"] = {"message": message, "ban": any(code in message for code in _BANS)}
        scopes.append(view)
    return scopes


_BANS = ("(HTTP 418)", "(HTTP 403)")  # what vendors answer when they ban a client, not just slow it


def vendor_of(executor: SyncTaskExecutor, scope: str) -> str | None:
    """The vendor a scope belongs to (a dataset's scope: its dataset's vendor)."""
    kind, name, _ = scope_parts(scope)
    if kind in ("vendor", "node"):
        return name
    if kind == "dataset":
        try:
            return executor.catalog.dataset(name).vendor
        except UnknownPlan:
            return None
    return None


def task_row(record: TaskRecord) -> dict[str, Any]:
    """A task as the state keeps it: its parameters (a failed one's), why it ended, when, in which run."""
    params = json.loads(record.params) if record.params else None
    if SECRETS and params is not None:
        params = json.loads(SECRETS(json.dumps(params)))
    return {"task_id": record.task_id, "plan": record.plan, "state": record.state, "params": params,
            "message": masked(record.message), "attempts": record.attempts, "at": iso(record.at),
            "run_id": record.run_id}


def running_row(task: SyncTask, now: float) -> dict[str, Any]:
    """A task in flight: its parameters, since when, on which node, which try."""
    params = json.loads(SECRETS(json.dumps(dict(task.params), default=str))) if SECRETS else dict(task.params)
    return {"task_id": task.id, "plan": task.plan, "state": "running", "params": params, "message": None,
            "attempts": task.attempt, "at": iso(task.admitted), "run_id": None, "node": task.node,
            "seconds": None if task.admitted is None else round(max(now - task.admitted, 0.0), 3)}


def live_counts(executor: SyncTaskExecutor, name: str, run_id: str) -> dict[str, Any] | None:
    """The counts of the plan's run if it is the one going on here (fresher than its record)."""
    p = executor.progress.plans.get(name)
    going = p is not None and p.run_id == run_id and executor.scheduler.has_plan(name)
    return executor.progress.counts(name) if going else None
