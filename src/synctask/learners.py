"""The engine's learned limits: one ``LimitLearner`` per scope whose limits are learned
(``limits = "learn"``), told what each task sent and how it came back, and what the vendor's
headers state; what they learn goes to the scheduler at once (the written limits stay, as a
cap) and into the state, so the next run, the daemon's other plans and every Ray node (the
master's limiter admits for all) start from it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import Failure, OutcomeKind
from .learning import Learned, LimitLearner
from .model import Dataset, SyncTask, Vendor
from .scheduler import Scheduler
from .store import Store
from .windows import Quota

__all__ = ["Learners", "LEARNED"]

LEARNED = "limits.learned"  # the state-store key: scope -> what was learned (rate, per, source, at)
_LIMITED = (OutcomeKind.RATE_LIMITED, OutcomeKind.QUOTA)
SETTLE_MAX = 2.0  # seconds a refusal from a Ray node waits for the requests sent before it to come back

# A refusal to explain: (when it reached the vendor, scope, Retry-After, source, ticket, admitted)
_Refusal = tuple[float, str, "float | None", str, "int | None", float]


class Learners:
    """Every learning scope of the engine, and which datasets draw on which."""

    def __init__(self, scheduler: Scheduler, store: Callable[[], Store], clock: Callable[[], float]) -> None:
        self.scheduler = scheduler
        self._store = store
        self._clock = clock
        self.by_scope: dict[str, LimitLearner] = {}
        self._written: dict[str, tuple[Any, ...]] = {}  # scope -> its written limits (kept beside)
        self._margin: dict[str, float | None] = {}
        self._weight: dict[str, int] = {}  # scope -> the heaviest request on it (a quota holds one at least)
        self._of_dataset: dict[str, list[str]] = {}  # dataset -> its learning scopes (vendor, dataset)
        self._of_vendor: dict[str, list[str]] = {}  # vendor -> its learning scope (a permit without a dataset)
        self._tickets: dict[SyncTask, tuple[int, list[int]]] = {}  # a task in flight -> its weight, its ticket in each
        self._saved: dict[str, list[dict[str, Any]]] | None = None
        self._refusals: list[_Refusal] = []  # Ray's, until what was admitted before them is counted where it went

    def __bool__(self) -> bool:
        return bool(self.by_scope)

    # --- setup -----------------------------------------------------------------------------
    def add_dataset(self, dataset: Dataset, vendor: Vendor | None) -> None:
        scopes = []
        if vendor is not None and vendor.learn is not None:
            scopes.append(self._learner(f"vendor:{vendor.name}", vendor.learn, vendor.limits, vendor.margin))
        if dataset.learn is not None:
            margin = vendor.margin if vendor is not None else None
            scopes.append(self._learner(f"dataset:{dataset.name}", dataset.learn, dataset.limits, margin))
        if vendor is not None and vendor.learn is not None:
            self._of_vendor[vendor.name] = scopes[:1]
        if scopes:
            self._of_dataset[dataset.name] = scopes
            for scope in scopes:
                self._weight[scope] = max(self._weight.get(scope, 1), dataset.weight)
            for scope in scopes:  # adding a dataset wrote its vendor's limits again: the learned ones back
                self._apply(scope, self._clock())

    def remove_dataset(self, name: str) -> None:
        self._of_dataset.pop(name, None)

    def _learner(self, scope: str, learn: Any, written: tuple[Any, ...], margin: float | None) -> str:
        if scope not in self.by_scope:
            self.by_scope[scope] = LimitLearner(cap=learn.cap, start=learn.start)
            self._written[scope], self._margin[scope] = written, margin
        return scope

    def restore(self) -> None:
        """Take up what earlier runs learned (before their usage is restored: it is counted
        under the learned limits)."""
        if not self.by_scope:
            return
        saved = self._store().setting(LEARNED) or {}
        for scope, records in saved.items():
            learner = self.by_scope.get(scope)
            if learner is None or learner.learned:
                continue
            kept = [Learned.from_record(record) for record in records]
            self.by_scope[scope] = LimitLearner(cap=learner.cap, start=learner.start, learned=kept)
            self._apply(scope, self._clock())

    # --- what happened ---------------------------------------------------------------------
    def scopes_of(self, dataset: str | None, vendor: str | None = None) -> list[str] | None:
        """The learning scopes a request of ``dataset`` (or, with none, of ``vendor``) counts in."""
        return self._of_dataset.get(dataset) if dataset is not None else self._of_vendor.get(vendor or "")

    def sent(self, task: SyncTask, dataset: str | None, now: float, weight: int, vendor: str | None = None) -> None:
        """``task`` (or another program's request, on a permit) was admitted at ``now``."""
        scopes = self.scopes_of(dataset, vendor)
        if scopes:
            self._tickets[task] = weight, [self.by_scope[scope].sent(now, weight) for scope in scopes]

    def ended(self, task: SyncTask, dataset: str | None, failure: Failure | None, now: float,
              vendor: str | None = None) -> None:
        sent = self._tickets.pop(task, None)
        scopes = self.scopes_of(dataset, vendor)
        if sent is None or not scopes:
            return
        weight, tickets = sent
        reached = task.admitted
        if task.reached is not None and task.reached != task.admitted:  # a Ray node sent it later than it was admitted
            reached = task.reached
            for scope in scopes:
                self.by_scope[scope].reached(task.admitted, reached, weight)
        if failure is None or failure.kind not in _LIMITED:
            for scope in scopes:
                learner = self.by_scope[scope]
                if learner.clean(now, task.admitted):
                    self._apply(scope, now)
                    if learner.probe is None:
                        self._save()  # a try of more that held is kept (a try is not, until it holds)
        else:
            scope = self._refused_scope(scopes, failure)
            source = f"HTTP {failure.status}" if failure.status is not None else failure.kind.value.replace("_", "-")
            if reached == task.admitted:
                self._explain((reached, scope, failure.retry_after, source, tickets[scopes.index(scope)], reached), now)
            else:
                self._refusals.append((reached, scope, failure.retry_after, source, None, task.admitted))
                self.by_scope[scope].hold()
        if self._refusals:
            self._explain_settled(now)

    def _explain_settled(self, now: float) -> None:
        """Explain the refusals from Ray nodes once every request admitted before one reached the
        vendor has come back and is counted when it reached it too (until then it counts at its
        admission, before the refused one, though it may have reached the vendor after it), or
        after ``SETTLE_MAX`` seconds."""
        first = min((task.admitted for task in self._tickets), default=math.inf)  # the oldest still out
        self._refusals.sort()
        while self._refusals and (self._refusals[0][0] <= first or now - self._refusals[0][0] > SETTLE_MAX):
            self._explain(self._refusals.pop(0), now)

    def _explain(self, refusal: _Refusal, now: float) -> None:
        reached, scope, retry_after, source, ticket, admitted = refusal
        learner = self.by_scope.get(scope)
        if learner is not None and learner.refused(now, reached, retry_after, source, ticket, admitted):
            self._apply(scope, now)
            self._save()

    def stated(self, scope: str, rate: int, per: float, source: str) -> None:
        """The vendor's headers say the scope's limit."""
        learner = self.by_scope.get(scope)
        now = self._clock()
        if learner is not None and learner.stated(rate, per, now, source):
            self._apply(scope, now)
            self._save()

    # --- what is known ---------------------------------------------------------------------
    def describe(self, scope: str) -> str | None:
        learner = self.by_scope.get(scope)
        return None if learner is None else learner.describe()

    def forget(self, scope: str) -> bool:
        """Drop what was learned for ``scope``: it probes again from its start."""
        learner = self.by_scope.get(scope)
        if learner is None:
            return False
        self.by_scope[scope] = LimitLearner(cap=learner.cap, start=learner.start)
        self._apply(scope, self._clock())
        self._save()
        return True

    # --- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _refused_scope(scopes: list[str], failure: Failure) -> str:
        """The learning scope a refusal speaks of: the one its failure names, else the dataset's."""
        wanted = {"vendor": "vendor:", "dataset": "dataset:"}.get(failure.scope or "dataset", "dataset:")
        for scope in scopes:
            if scope.startswith(wanted):
                return scope
        return scopes[0]

    def _apply(self, scope: str, now: float) -> None:
        learner = self.by_scope[scope]
        least = self._weight.get(scope, 1)
        learned = [q if not isinstance(q, Quota) or q.rate >= least else Quota(least, q.per, q.clock, q.tz)
                   for q in learner.limits()]
        seeds = {q.per: learner.recent(q.per, now) for q in learned if isinstance(q, Quota)}
        self.scheduler.relimit(scope, [*self._written[scope], *learned], now, seeds, self._margin[scope])

    def _save(self) -> None:
        records = {scope: learner.records() for scope, learner in self.by_scope.items() if learner.learned}
        self._store().save_setting(LEARNED, records)
