"""synctask: keep local datasets in sync with rate-limited data vendors.

The public API is what this module exports; everything else is internal and may change.
"""

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
from .events import Event, FreezeEvent, PlanEvent, SkipEvent, StreamEvent, TaskEvent
from .executor import RunSummary, SyncTaskExecutor
from .grid import ParamGrid
from .limits import Concurrency, Gate, Limiter, Quota
from .lock import StateInUse
from .model import (
    Dataset,
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
from .progress import PlanProgress, Progress
from .retry import RetryPolicy, parse_retry_after
from .schedule import Schedule, parse_schedule
from .scheduler import Decision, PlanStats, Scheduler, Verdict
from .sinks import CallbackSink, MemorySink, Sink, SQLiteSink, StreamSink
from .store import MemoryStore, RunRecord, SQLiteStore, Store, TaskRecord

__version__ = "0.1.0"

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
    "FreezeEvent",
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
