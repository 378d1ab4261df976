"""The public API is exactly what ``synctask.__all__`` lists; changing it is a deliberate act."""

import synctask

EXPECTED = {
    "Concurrency", "Dataset", "Decision", "ErrorRule", "Failure", "Gate", "IllegalTransition",
    "LimitError", "Limiter", "OutcomeKind", "ParamGrid", "PlanFile", "PlanFileError", "PlanState",
    "PlanStats", "Problem", "Quota", "RetryPolicy", "Run", "RunState", "Schedule", "Scheduler",
    "Secret", "SyncError", "SyncPlan", "SyncTask", "TaskFailed", "TaskState", "UnknownPlan",
    "Vendor", "Verdict", "classify", "load_plan_file", "parse_plan_text", "parse_retry_after",
    "parse_schedule", "task_id",
    # the executor issue
    "CallbackSink", "Event", "FatalError", "FreezeEvent", "InvalidRequest", "JobFailed", "MemorySink",
    "MemoryStore", "PlanEvent", "PlanProgress", "Progress", "QuotaExhausted", "RateLimited", "RunRecord",
    "RunSummary", "SQLiteSink", "SQLiteStore", "Sink", "SkipEvent", "Store", "SyncTaskExecutor", "TaskError",
    "TaskEvent", "TaskRecord", "TransientError",
    # the vendor issue
    "StreamSink", "StreamEvent",
    # keeping the promises under real conditions, and bad input
    "PlanMismatch", "StorageFailed", "StateInUse",
    # safe to leave running: storage faults and sinks that moved are errors users can catch
    "SinkMoved", "StateDamaged", "StateUnwritable",
    # other programs on the same keys take permits from the daemon
    "Permits", "PermitHeld",
    # several keys per vendor: a key of them, and the event when the vendor refuses one
    "Key", "KeyEvent",
}


def test_public_api_is_pinned():
    assert set(synctask.__all__) == EXPECTED


def test_every_exported_name_exists_and_is_documented():
    for name in synctask.__all__:
        member = getattr(synctask, name)
        assert member.__doc__, f"{name} has no docstring"


def test_every_error_derives_from_sync_error():
    for name in ("PlanFileError", "IllegalTransition", "LimitError", "UnknownPlan", "TaskFailed", "JobFailed",
                 "TaskError", "RateLimited", "QuotaExhausted", "InvalidRequest", "TransientError", "FatalError",
                 "PlanMismatch", "StorageFailed", "StateInUse"):
        assert issubclass(getattr(synctask, name), synctask.SyncError)


def test_package_is_typed():
    from importlib.resources import files

    assert files("synctask").joinpath("py.typed").is_file()


def test_every_exported_name_loads_lazily_from_its_module():
    assert set(synctask._WHERE) == set(synctask.__all__)
    assert set(dir(synctask)) >= set(synctask.__all__)


def test_import_and_help_load_neither_aiohttp_nor_pydantic():
    """``synctask --help`` must start fast: the heavy libraries load only when a command needs them."""
    import subprocess
    import sys

    code = ("import sys, synctask, synctask.cli; "
            "print(sorted(m for m in ('aiohttp', 'pydantic', 'croniter', 'pyarrow') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "[]"
