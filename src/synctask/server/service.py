"""The daemon's plans kept in step with its executor and its state store.

The catalog (the plan file plus the API's additions and removals) and each plan's wanted state
(running, paused, stopped, ended) are saved in the state store whenever they change, so a
restarted daemon has the same plans in the same states. Additions, removals and reloads are
applied to the running executor without stopping the plans they do not touch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import PlanFile
from ..events import Event, PlanEvent
from ..executor import SyncTaskExecutor
from ..model import PlanState
from .catalog import SETTING, Allowed, Catalog, Diff

__all__ = ["Service"]

STATES = "daemon.states"  # the state-store key of each plan's wanted state
_WANTED = {"running": "running", "paused": "paused", "stopped": "stopped",
           "completed": "ended", "cancelled": "ended", "failed": "ended"}
_HELD = {"paused": PlanState.PAUSED, "stopped": PlanState.STOPPED}
_SETTLE_SECONDS = 5.0  # how long a reload waits for the cancelled tasks of the plans it replaces


class Service:
    """One daemon's catalog, executor and saved states, changed together."""

    def __init__(self, executor: SyncTaskExecutor, plan_file: str, env: Mapping[str, str] | None = None, *,
                 allow_code: bool = False, data_dir: Path | None = None, sets: Sequence[str] = ()) -> None:
        self.executor = executor
        store = executor.store
        allowed = Allowed(data_dir or Path(plan_file).resolve().parent, allow_code)
        self.catalog = Catalog(plan_file, store.setting(SETTING), env, allowed, sets)
        self.wanted: dict[str, str] = dict(store.setting(STATES) or {})
        self._lock = asyncio.Lock()

    def boot(self, refetch: Collection[str] = ()) -> PlanFile:
        """Load every plan into the executor as it was when the daemon last stopped: a new manual
        plan starts, a scheduled one waits for its time, a paused one stays paused. A sink that
        moved since its tasks finished raises ``SinkMoved`` first (see ``check_sinks``)."""
        plans = self.catalog.plans()
        self.executor.load(plans, start=False)
        self.executor.delivery.check_sinks(self.executor.catalog.plans.values(), refetch)
        self.wanted = {name: state for name, state in self.wanted.items() if name in {p.name for p in plans.plans}}
        for plan in plans.plans:
            self._bring(plan.name, self.wanted.get(plan.name), plan.schedule.kind == "manual")
        self._save()
        self.executor.listen(self._heard)
        return plans

    def _bring(self, name: str, wanted: str | None, manual: bool) -> None:
        """Put plan ``name`` where it was: running, paused or stopped (held as it was, its counts
        taken up), or showing how its last run ended; a new manual plan starts."""
        ex = self.executor
        if wanted in ("running", "paused", "stopped") or (wanted is None and manual):
            ex.start_plan(name, hold=_HELD.get(wanted or ""))
        else:
            ex.recall_plan(name)

    def _heard(self, event: Event) -> None:
        if not isinstance(event, PlanEvent):
            return
        if event.state == "removed":
            changed = self.wanted.pop(event.plan, None) is not None
        else:
            wanted = _WANTED.get(event.state)
            changed = wanted is not None and self.wanted.get(event.plan) != wanted
            if changed:
                self.wanted[event.plan] = wanted  # type: ignore[assignment]
        if changed:
            self.executor.store.save_setting(STATES, self.wanted)

    def _save(self) -> None:
        self.executor.store.save_setting(SETTING, self.catalog.stored())
        self.executor.store.save_setting(STATES, self.wanted)

    # --- changes -------------------------------------------------------------------------
    async def add(self, doc: dict[str, Any], source: str) -> Diff:
        """Add the document's vendors, datasets and plans (raises, changing nothing, when invalid)."""
        async with self._lock:
            change, plans = self.catalog.add(doc, source)
            await self._apply(change, plans)
            return change

    async def remove(self, name: str) -> None:
        """Forget plan ``name``, and its dataset and vendor when no other plan uses them: their
        sinks close now and are never written again (not even at shutdown)."""
        async with self._lock:
            self.executor.catalog.plan(name)  # UnknownPlan → 404
            cancelled = self.executor.remove_plan(name)
            self.catalog.remove(name)
            await self.executor.settled(cancelled, _SETTLE_SECONDS)
            await self._drop_unused()
            self._save()

    async def _drop_unused(self) -> None:
        ex = self.executor
        used = {plan.dataset for plan in ex.catalog.plans.values()}
        for dataset in list(ex.catalog.datasets.values()):
            if dataset.name not in used:
                ex.remove_dataset(dataset.name)
        needed = {dataset.vendor for dataset in ex.catalog.datasets.values()}
        for vendor in list(ex.catalog.vendors.values()):
            if vendor.name not in needed:
                ex.catalog.remove_vendor(vendor.name)
        await ex.delivery.close_sinks(ex.catalog.take_removed())

    async def reload(self) -> Diff:
        """Read the plan file again and apply what changed (raises, changing nothing, when invalid)."""
        async with self._lock:
            change, plans = self.catalog.reload()
            await self._apply(change, plans)
            return change

    async def _apply(self, change: Diff, plans: PlanFile) -> None:
        ex = self.executor
        kept = {name: self._state_of(name) for name in change.changed}
        cancelled = []
        for name in [*change.removed, *change.changed]:
            cancelled += ex.remove_plan(name)
        await ex.settled(cancelled, _SETTLE_SECONDS)
        for name in [*change.rebuilt, *change.dropped]:
            ex.remove_dataset(name)
        known = {d.name for d in ex.catalog.datasets.values()}
        for vendor in plans.vendors.values():
            ex.add_vendor(vendor)
        for dataset in plans.datasets.values():
            if dataset.name not in known or dataset.name in change.rebuilt:
                ex.add_dataset(dataset)
        by_name = {p.name: p for p in plans.plans}
        for name in [*change.added, *change.changed]:
            plan = by_name[name]
            ex.add_plan(plan, start=False)
            wanted = kept.get(name)  # a changed plan keeps its state; one that had ended may have new work
            self._bring(name, None if wanted == "ended" else wanted, plan.schedule.kind == "manual")
        await ex.delivery.close_sinks(ex.catalog.take_removed())
        self._save()

    def _state_of(self, name: str) -> str | None:
        state = self.executor.plan_state(name)
        if state is PlanState.IDLE:
            return None
        return _WANTED.get(state.value, "ended")
