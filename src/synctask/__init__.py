"""synctask: keep local datasets in sync with rate-limited data vendors.

The public API is what this module exports; everything else is internal and may change.
"""

from .config import PlanFile, load_plan_file, parse_plan_text
from .errors import (
    ErrorRule,
    Failure,
    IllegalTransition,
    LimitError,
    OutcomeKind,
    PlanFileError,
    Problem,
    SyncError,
    TaskFailed,
    UnknownPlan,
    classify,
)
from .grid import ParamGrid
from .limits import Concurrency, Gate, Limiter, Quota
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
from .retry import RetryPolicy, parse_retry_after
from .schedule import Schedule, parse_schedule
from .scheduler import Decision, PlanStats, Scheduler, Verdict

__version__ = "0.1.0"

__all__ = [
    "Concurrency",
    "Dataset",
    "Decision",
    "ErrorRule",
    "Failure",
    "Gate",
    "IllegalTransition",
    "LimitError",
    "Limiter",
    "OutcomeKind",
    "ParamGrid",
    "PlanFile",
    "PlanFileError",
    "PlanState",
    "PlanStats",
    "Problem",
    "Quota",
    "RetryPolicy",
    "Run",
    "RunState",
    "Schedule",
    "Scheduler",
    "Secret",
    "SyncError",
    "SyncPlan",
    "SyncTask",
    "TaskFailed",
    "TaskState",
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
