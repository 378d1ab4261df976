"""A plan's run history as people read it: one row per run, newest first, times in ISO 8601.

The state keeps every run (``Store.history``): its logical time, when it started and ended, how
it ended and its counts, saved with its outcomes. A run the state still calls running whose
process is gone (a kill -9, a power cut) reads "interrupted": the next start takes it up.
``synctask history`` and ``GET /api/plans/{name}/runs`` both show these rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .redact import SECRETS
from .store import RunRecord

__all__ = ["FIELDS", "run_row", "iso"]

FIELDS = ("run_id", "logical_time", "state", "started_at", "ended_at", "done", "failed", "skipped", "rows",
          "retries", "freezes", "message")


def run_row(run: RunRecord, live: Mapping[str, Any] | None = None, *, orphaned: bool = False) -> dict[str, Any]:
    """``run`` as a history row; ``live``: the counts of a run going on in this process (fresher
    than the record's); ``orphaned``: no process runs it any more (a "running" run was cut)."""
    counts = {**(run.summary or {}), **(live or {})}
    state = "interrupted" if orphaned and run.state == "running" else run.state
    message = counts.get("message")
    return {
        "run_id": run.id,
        "logical_time": _logical(run.logical_time),
        "state": state,
        "started_at": iso(run.started_at),
        "ended_at": iso(run.ended_at),
        **{key: int(counts.get(key) or 0) for key in ("done", "failed", "skipped", "rows", "retries", "freezes")},
        "message": SECRETS(message) if SECRETS and message else message,
    }


def iso(at: float | None, *, precise: bool = False) -> str | None:
    """Epoch seconds as local ISO 8601 with its offset (``2026-11-27T15:21:53+01:00``);
    ``precise``: to the millisecond (events, and instants a page counts down to)."""
    if at is None:
        return None
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="milliseconds" if precise else "seconds")


def _logical(text: str) -> str:
    try:
        return datetime.fromisoformat(text).isoformat(timespec="seconds")
    except ValueError:
        return text
