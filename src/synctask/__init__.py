"""synctask: keep local datasets in sync with rate-limited data vendors.

The public API is what this module exports; everything else is internal and may change.
Names load on first use (PEP 562), so ``import synctask`` and ``synctask --help`` stay fast:
the executor's aiohttp and the plan file's pydantic are imported only by what needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import PlanFile, load_plan_file, parse_plan_text
    from .errors import (
        ErrorRule,
        Failure,
        FatalError,
        IllegalTransition,
        InvalidRequest,
        JobFailed,
        LimitError,
        OutcomeKind,
        PlanFileError,
        PlanMismatch,
        Problem,
        QuotaExhausted,
        RateLimited,
        StorageFailed,
        SyncError,
        TaskError,
        TaskFailed,
        TransientError,
        UnknownPlan,
        classify,
    )
    from .events import Event, FreezeEvent, KeyEvent, PlanEvent, SkipEvent, StreamEvent, TaskEvent
    from .executor import RunSummary, SyncTaskExecutor
    from .grid import ParamGrid
    from .limits import Concurrency, Gate, Limiter, Quota
    from .lock import StateInUse
    from .model import (
        Dataset,
        Key,
        PlanState,
        Run,
        RunState,
        Secret,
        SyncPlan,
        SyncTask,
        TaskState,
        Vendor,
        task_id,
    )
    from .permit_client import PermitHeld, Permits
    from .progress import PlanProgress, Progress
    from .retry import RetryPolicy, parse_retry_after
    from .schedule import Schedule, parse_schedule
    from .scheduler import Decision, PlanStats, Scheduler, Verdict
    from .sinks import CallbackSink, MemorySink, Sink, SQLiteSink, StreamSink
    from .store import MemoryStore, RunRecord, SQLiteStore, Store, TaskRecord

__version__ = "0.1.0"

# Each public name and the module that defines it.
_WHERE: dict[str, str] = {
    **dict.fromkeys(("PlanFile", "load_plan_file", "parse_plan_text"), "config"),
    **dict.fromkeys((
        "ErrorRule", "Failure", "FatalError", "IllegalTransition", "InvalidRequest", "JobFailed", "LimitError",
        "OutcomeKind", "PlanFileError", "PlanMismatch", "Problem", "QuotaExhausted", "RateLimited", "SinkMoved",
        "StorageFailed",
        "SyncError", "TaskError", "TaskFailed", "TransientError", "UnknownPlan", "classify",
    ), "errors"),
    **dict.fromkeys(("Event", "FreezeEvent", "KeyEvent", "PlanEvent", "SkipEvent", "StreamEvent", "TaskEvent"),
                   "events"),
    **dict.fromkeys(("RunSummary", "SyncTaskExecutor"), "executor"),
    **dict.fromkeys(("ParamGrid",), "grid"),
    **dict.fromkeys(("Concurrency", "Gate", "Limiter", "Quota"), "limits"),
    **dict.fromkeys(("StateInUse",), "lock"),
    **dict.fromkeys((
        "Dataset", "Key", "PlanState", "Run", "RunState", "Secret", "SyncPlan", "SyncTask", "TaskState", "Vendor",
        "task_id",
    ), "model"),
    **dict.fromkeys(("PermitHeld", "Permits"), "permit_client"),
    **dict.fromkeys(("PlanProgress", "Progress"), "progress"),
    **dict.fromkeys(("RetryPolicy", "parse_retry_after"), "retry"),
    **dict.fromkeys(("Schedule", "parse_schedule"), "schedule"),
    **dict.fromkeys(("Decision", "PlanStats", "Scheduler", "Verdict"), "scheduler"),
    **dict.fromkeys(("CallbackSink", "MemorySink", "SQLiteSink", "Sink", "StreamSink"), "sinks"),
    **dict.fromkeys(("MemoryStore", "RunRecord", "SQLiteStore", "StateDamaged", "StateUnwritable", "Store",
                     "TaskRecord"), "store"),
}

__all__ = [
    "CallbackSink",
    "Concurrency",
    "Dataset",
    "Decision",
    "ErrorRule",
    "Event",
    "Failure",
    "FatalError",
    "PlanMismatch",
    "StorageFailed",
    "StateInUse",
    "SinkMoved",
    "StateDamaged",
    "StateUnwritable",
    "FreezeEvent",
    "Key",
    "KeyEvent",
    "Gate",
    "IllegalTransition",
    "InvalidRequest",
    "JobFailed",
    "LimitError",
    "Limiter",
    "MemorySink",
    "MemoryStore",
    "OutcomeKind",
    "ParamGrid",
    "PermitHeld",
    "Permits",
    "PlanEvent",
    "PlanFile",
    "PlanFileError",
    "PlanProgress",
    "PlanState",
    "PlanStats",
    "Problem",
    "Progress",
    "Quota",
    "QuotaExhausted",
    "RateLimited",
    "RetryPolicy",
    "Run",
    "RunRecord",
    "RunState",
    "RunSummary",
    "SQLiteSink",
    "SQLiteStore",
    "StreamEvent",
    "StreamSink",
    "Schedule",
    "Scheduler",
    "Secret",
    "Sink",
    "SkipEvent",
    "Store",
    "SyncError",
    "SyncPlan",
    "SyncTask",
    "SyncTaskExecutor",
    "TaskError",
    "TaskEvent",
    "TaskFailed",
    "TaskRecord",
    "TaskState",
    "TransientError",
    "UnknownPlan",
    "Vendor",
    "Verdict",
    "classify",
    "load_plan_file",
    "parse_plan_text",
    "parse_retry_after",
    "parse_schedule",
    "task_id",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is asked for."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'synctask' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
