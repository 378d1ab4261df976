"""Plans, tasks, runs and their states: plain typed data, no I/O.

Every state change goes through ``transition``, which consults the tables below; a change the
tables do not list raises ``IllegalTransition`` instead of silently corrupting a run.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import IllegalTransition
from .limits import Limit, Quota
from .redact import SECRETS
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .grid import ParamGrid
    from .schedule import Schedule

__all__ = [
    "Secret",
    "TaskState",
    "PlanState",
    "RunState",
    "TASK_TRANSITIONS",
    "PLAN_TRANSITIONS",
    "RUN_TRANSITIONS",
    "transition",
    "Key",
    "Vendor",
    "Dataset",
    "SyncPlan",
    "SyncTask",
    "Run",
    "task_id",
    "MAX_WORKERS",
    "check_workers",
]

MAX_WORKERS = 100_000  # concurrent task slots at most: beyond it a typo, not a plan


def check_workers(workers: object) -> int:
    """``workers`` if it is a whole number from 1 to ``MAX_WORKERS``; else ValueError saying so."""
    if type(workers) is not int or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be a whole number from 1 to {MAX_WORKERS:,}, got {workers!r}")
    return workers


class Secret:
    """A credential. Printing, logging or formatting it shows ``***``; ``reveal()`` gives the value."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source  # where it came from, e.g. "env TUSHARE_TOKEN"; safe to print
        SECRETS.add(value)  # masked in every message, event and stored text from now on

    def reveal(self) -> str:
        return self._value

    def __reduce__(self) -> tuple[Any, ...]:
        """Unpickled (on a Ray node) through ``__init__``, so the node masks it in its messages too."""
        return (Secret, (self._value, self.source))

    def __repr__(self) -> str:
        return f"Secret('***', source={self.source!r})" if self.source else "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class TaskState(str, Enum):
    """Where one task is; changes only through ``TASK_TRANSITIONS``."""

    PENDING = "pending"        # waiting in its dataset queue
    RUNNING = "running"        # admitted by the limiter, a worker has it
    RETRY_WAIT = "retry_wait"  # failed, waiting for its backoff to pass
    DONE = "done"              # rows durable in the sink, state recorded
    FAILED = "failed"          # invalid request, or attempts used up
    CANCELLED = "cancelled"    # its plan was cancelled or removed


class PlanState(str, Enum):
    """Where a plan's current run is; changes only through ``PLAN_TRANSITIONS``."""

    IDLE = "idle"            # known, not running (manual, or waiting for its schedule)
    RUNNING = "running"
    PAUSED = "paused"        # dispatches nothing; in-flight tasks finish
    STOPPED = "stopped"      # dispatches nothing; in-flight tasks went back to pending
    COMPLETED = "completed"  # the run finished (some tasks may have failed)
    FAILED = "failed"        # a fatal error stopped it
    CANCELLED = "cancelled"


class RunState(str, Enum):
    """How a run ended (or that it is running); changes only through ``RUN_TRANSITIONS``."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the process was asked to stop; the next start resumes


_T = TaskState
TASK_TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    _T.PENDING: frozenset({_T.RUNNING, _T.CANCELLED}),
    _T.RUNNING: frozenset({_T.DONE, _T.FAILED, _T.RETRY_WAIT, _T.PENDING, _T.CANCELLED}),
    _T.RETRY_WAIT: frozenset({_T.PENDING, _T.CANCELLED}),
    _T.DONE: frozenset(),
    _T.FAILED: frozenset(),
    _T.CANCELLED: frozenset(),
}

_P = PlanState
PLAN_TRANSITIONS: Mapping[PlanState, frozenset[PlanState]] = {
    _P.IDLE: frozenset({_P.RUNNING, _P.CANCELLED}),
    _P.RUNNING: frozenset({_P.PAUSED, _P.STOPPED, _P.COMPLETED, _P.FAILED, _P.CANCELLED}),
    _P.PAUSED: frozenset({_P.RUNNING, _P.STOPPED, _P.CANCELLED, _P.FAILED}),
    _P.STOPPED: frozenset({_P.RUNNING, _P.CANCELLED}),
    _P.COMPLETED: frozenset({_P.RUNNING, _P.IDLE}),
    _P.FAILED: frozenset({_P.RUNNING, _P.IDLE, _P.CANCELLED}),
    _P.CANCELLED: frozenset({_P.RUNNING, _P.IDLE}),
}

_R = RunState
RUN_TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    _R.RUNNING: frozenset({_R.COMPLETED, _R.FAILED, _R.CANCELLED, _R.INTERRUPTED}),
    _R.INTERRUPTED: frozenset({_R.RUNNING, _R.CANCELLED}),
    _R.COMPLETED: frozenset(),
    _R.FAILED: frozenset({_R.RUNNING}),
    _R.CANCELLED: frozenset(),
}

_TABLES: dict[type[Enum], Mapping[Any, frozenset[Any]]] = {
    TaskState: TASK_TRANSITIONS,
    PlanState: PLAN_TRANSITIONS,
    RunState: RUN_TRANSITIONS,
}

S = TypeVar("S", TaskState, PlanState, RunState)


def transition(what: str, current: S, requested: S) -> S:
    """Return ``requested`` if the table allows ``current → requested``; raise otherwise."""
    if requested not in _TABLES[type(current)][current]:
        raise IllegalTransition(what, current, requested)
    return requested


@dataclass(frozen=True)
class Learn:
    """A scope whose limits are learned: the probe's first pace, and a cap it never goes above."""

    start: Quota
    cap: Quota | None = None


@dataclass(frozen=True)
class Key:
    """One of a vendor's API keys: ``name`` is the variable it comes from (safe to show, the value
    never is); ``limits`` replace the vendor's per-key limits of the same window (a paid tier's);
    keys of one ``account`` also share that account's limits."""

    name: str
    secret: Secret
    account: str | None = None
    limits: tuple[Limit, ...] = ()


@dataclass(frozen=True)
class Vendor:
    """A data provider; its limits are shared by all its datasets.

    ``node_limits`` apply per worker node (per-IP limits), ``limits`` to the whole vendor. With
    several ``keys`` every limit the vendor and its datasets state counts per key (vendors count
    per key), ``accounts`` limits per account, and each task takes a key at admission:
    ``key_order`` "spread" (the key with the most room) or "fill-first" (the first with room).
    """

    name: str
    connector: str
    base_url: str | None = None
    token: Secret | None = None
    limits: tuple[Limit, ...] = ()
    node_limits: tuple[Limit, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    margin: float | None = None  # seconds of safety on sliding windows (network jitter); None: none
    learn: Learn | None = None  # its limits are learned from its answers (``learning``)
    keys: tuple[Key, ...] = ()  # several keys (``token = [...]``): each task takes one; ``token`` is the first
    key_order: str = "spread"
    accounts: Mapping[str, tuple[Limit, ...]] = field(default_factory=dict)  # account -> the limits its keys share

    def secret(self, key: str | None) -> Secret | None:
        """The value of the key a task took (its variable's name), else the vendor's token."""
        if key is not None:
            for each in self.keys:
                if each.name == key:
                    return each.secret
        return self.token

    def key_limits(self, key: Key) -> tuple[Limit, ...]:
        """The vendor's per-key limits with ``key``'s own in place of those of the same window."""
        def window(limit: Limit) -> Any:
            return (limit.per, limit.clock, limit.tz) if isinstance(limit, Quota) else "concurrency"

        own = {window(limit) for limit in key.limits}
        return (*(limit for limit in self.limits if window(limit) not in own), *key.limits)


@dataclass(frozen=True)
class Dataset:
    """One endpoint of a vendor, with its own limits, request weight and sink."""

    name: str
    vendor: str
    api: str
    limits: tuple[Limit, ...] = ()
    weight: int = 1
    sink: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    errors: tuple[Any, ...] = ()  # ErrorRule: the user's own classification rules
    learn: Learn | None = None  # its limits are learned from its answers (``learning``)

    def scopes(self, node: str | None = None) -> tuple[str, ...]:
        """The limiter scopes a request to this dataset draws on (node scope when on a node)."""
        scopes = (f"vendor:{self.vendor}", f"dataset:{self.name}")
        if node is None:
            return scopes
        return (*scopes, f"node:{node}:vendor:{self.vendor}")

    def key_scopes(self, vendor: Vendor, key: Key) -> tuple[str, ...]:
        """The scopes a request with ``key`` draws on besides the shared ones: the key's count at
        the vendor (and its account's) and at this dataset."""
        return (*vendor_key_scopes(vendor, key), key_scope(key.name, f"dataset:{self.name}"))


def vendor_key_scopes(vendor: Vendor, key: Key) -> tuple[str, ...]:
    """The scopes a request with ``key`` to the vendor (no dataset in particular) draws on."""
    scope = key_scope(key.name, f"vendor:{vendor.name}")
    return (scope,) if key.account is None else (scope, account_scope(vendor.name, key.account))


def key_scope(key: str, scope: str) -> str:
    """What ``key`` counts of a shared scope: ``key:KEY_A:vendor:x`` for ``vendor:x``."""
    return f"key:{key}:{scope}"


def account_scope(vendor: str, account: str) -> str:
    return f"account:{account}:vendor:{vendor}"


def scope_parts(scope: str) -> tuple[str, str, str | None]:
    """A limiter scope's kind, name and node, as ``Dataset.scopes`` names them: ``vendor:x`` →
    (vendor, x, None), ``dataset:d`` → (dataset, d, None), ``node:n:vendor:x`` → (node, x, n);
    a key's scopes as what they count (``key:K:dataset:d`` → (dataset, d, None), see ``scope_key``)
    and an account's as its vendor's (``account:a:vendor:x`` → (vendor, x, None))."""
    kind, _, rest = scope.partition(":")
    if kind == "node":
        node, _, vendor = rest.partition(":vendor:")
        return kind, vendor, node
    if kind in ("key", "account"):
        return scope_parts(rest.partition(":")[2])
    return kind, rest, None


def scope_key(scope: str) -> str | None:
    """The key (its variable's name) a ``key:K:...`` scope counts, else None."""
    return scope.split(":", 2)[1] if scope.startswith("key:") else None


@dataclass(frozen=True)
class SyncPlan:
    """What to sync: a dataset, a parameter grid, a schedule, a priority, a timeout, retries."""

    name: str
    dataset: str
    params: ParamGrid
    schedule: Schedule
    priority: int = 0
    timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_fatal: str = "stop_plan"  # or "stop_all"
    catchup: str | None = None  # due times missed while nothing ran: "all", "latest", "none" (None: by params)
    overlap: str = "queue"  # a due time that comes while the previous run goes: "queue" or "skip"
    history: int = 1_000  # the newest runs kept in the state's run history (older ones are forgotten)
    refresh: float = 0.0  # seconds before a rolling range's end fetched again each run (vendors revise)

    @property
    def rolling(self) -> bool:
        """A scheduled plan with a range that ends at its logical time: each run fetches only what
        no earlier run did, and the last ``refresh`` of the range again."""
        return self.schedule.kind != "manual" and bool(self.params.rolling)

    @property
    def catch_up(self) -> str:
        """How missed due times are run: as set, else "all" when the params follow the logical
        time (each missed time is other data), "latest" when they do not (the same data again)."""
        if self.catchup is not None:
            return self.catchup
        return "all" if self.params.uses_templates else "latest"


class SyncTask:
    """One request with concrete parameters. ``id`` is derived from plan + parameters (+ the run's
    logical time for scheduled runs, ``run_key``, so each scheduled run does its work anew)."""

    __slots__ = ("plan", "params", "priority", "timeout", "attempt", "state", "seq", "run_key", "admitted", "answered",
                 "reached", "node", "key", "_id")

    def __init__(
        self,
        plan: str,
        params: Mapping[str, Any],
        priority: int = 0,
        timeout: float | None = None,
        seq: int = 0,
        run_key: str | None = None,
    ) -> None:
        self.plan = plan
        self.run_key = run_key
        self.params = params
        self.priority = priority
        self.timeout = timeout
        self.attempt = 0  # failed attempts so far that counted against the retry policy
        self.admitted = 0.0  # when the limiter last admitted it
        self.answered: float | None = None  # when its answer began (None: still on its way)
        self.reached: float | None = None  # when it reached the vendor, as well as known (None: when admitted)
        self.node: str | None = None  # the worker node its limits admitted it to (node-scoped limits)
        self.key: str | None = None  # the vendor key it took at admission (its variable's name), with several
        self.state = TaskState.PENDING
        self.seq = seq
        self._id: str | None = None

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = task_id(self.plan if self.run_key is None else f"{self.plan}@{self.run_key}", self.params)
        return self._id

    def move(self, to: TaskState) -> None:
        """Change state through the task transition table."""
        self.state = transition(f"task {self.id}", self.state, to)

    def __repr__(self) -> str:
        return f"SyncTask({self.id!r}, {dict(self.params)!r}, state={self.state.value})"


@dataclass
class Run:
    """One execution of a plan; progress and checkpoints belong to it."""

    plan: str
    id: str
    logical_time: datetime
    started_at: float
    state: RunState = RunState.RUNNING

    def move(self, to: RunState) -> None:
        self.state = transition(f"run {self.id}", self.state, to)


def _canonical(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_canonical)
# The same encoding through json's C encoder, made once instead of on every call (the same
# text: ids in existing state files stay valid); None where the C accelerator is missing.
_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = (_MAKE_ENCODER(None, _canonical, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True)
             if _MAKE_ENCODER is not None else None)


def task_id(plan: str, params: Mapping[str, Any]) -> str:
    """``plan:hash``: the same plan and parameters (in any key order) always give the same id."""
    blob = "".join(_C_ENCODE(params, 0)) if _C_ENCODE is not None and type(params) is dict else _ENCODER.encode(params)
    digest = hashlib.blake2b(blob.encode(), digest_size=10).hexdigest()
    return f"{plan}:{digest}"
