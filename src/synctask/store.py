"""Durable state: runs, task outcomes, quota usage, stream positions and checkpoints (SQLite by default).

Protocol first, then two implementations behind it: ``MemoryStore`` for tests and
``SQLiteStore`` (WAL mode) for everyone else; one test suite runs against both. Outcomes are
buffered and written in batches (``flush``), so the store never dominates dispatch. The order of
events makes this safe: a task's rows are durable in its sink *before* its outcome is buffered,
so a crash can only forget that a task finished (it runs again, and the idempotent sink
overwrites the same keys), never claim a task finished whose rows are missing.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from .disk import disk_problem, rollback_quietly
from .errors import SyncError
from .lock import StateLock
from .writer import Writer

__all__ = ["TaskRecord", "RunRecord", "Store", "MemoryStore", "SQLiteStore", "StateDamaged", "StateUnwritable"]


class TaskRecord(NamedTuple):
    """How one task ended in one run (a tuple: one is made for every task that ends)."""

    task_id: str
    plan: str
    run_id: str
    state: str  # "done" or "failed"
    attempts: int = 0
    message: str | None = None
    at: float = 0.0
    follow_up: str | None = None  # JSON parameters of the task this one asked for (a next page)
    params: str | None = None  # a failed task's own parameters (JSON): what to show, and what a retry runs
    rows: int = 0  # rows a done task wrote: a run's rows are recounted from its outcomes after a kill -9


@dataclass(frozen=True)
class RunRecord:
    id: str
    plan: str
    logical_time: str
    started_at: float
    state: str
    ended_at: float | None = None
    summary: dict[str, Any] | None = None


class Store(Protocol):
    """Where synctask keeps what must survive a restart."""

    def is_done(self, task_id: str) -> bool: ...
    def done_among(self, task_ids: list[str]) -> set[str]: ...
    def done_ids(self, plan: str, limit: int) -> set[str] | None: ...
    def follow_up(self, task_id: str) -> dict[str, Any] | None: ...
    def has_follow_ups(self, plan: str) -> bool: ...
    def record(self, record: TaskRecord) -> None: ...
    def flush(self) -> None: ...
    def start_run(self, run: RunRecord, keep: int | None = None) -> None: ...
    def end_run(self, run_id: str, state: str, ended_at: float, summary: dict[str, Any] | None = None) -> None: ...
    def note_counts(self, run_id: str, counts: dict[str, Any]) -> None: ...
    def runs(self, plan: str | None = None) -> list[RunRecord]: ...
    def history(self, plan: str, limit: int | None = None) -> list[RunRecord]: ...
    def last_run(self, plan: str) -> RunRecord | None: ...
    def run_counts(self, plan: str, run_id: str) -> dict[str, int]: ...
    def run_rows(self, plan: str, run_id: str) -> int: ...
    def failures(self, plan: str, limit: int) -> list[TaskRecord]: ...
    def failed_ids(self, plan: str, run_id: str) -> set[str]: ...
    def failed_tasks(self, plan: str, task_ids: Sequence[str]) -> list[TaskRecord]: ...
    def find_tasks(self, plan: str | None, state: str | None, text: str | None, limit: int,
                   offset: int = 0) -> list[TaskRecord]: ...
    def task_states(self, plan: str) -> dict[str, int]: ...
    def forget_plan(self, plan: str) -> None: ...
    def save_usage(self, records: list[dict[str, Any]]) -> None: ...
    def load_usage(self) -> list[dict[str, Any]]: ...
    def save_position(self, task_id: str, position: dict[str, Any]) -> None: ...
    def position(self, task_id: str) -> dict[str, Any] | None: ...
    def save_setting(self, key: str, value: Any) -> None: ...
    def setting(self, key: str) -> Any: ...
    def close(self) -> None: ...


def _needles(text: str) -> list[tuple[str, str]]:
    """What a task search for ``text`` looks for, as (column, LIKE pattern): the text in the
    task's id, parameters or message; ``name=value`` (as the dashboard shows parameters) as
    that parameter, a number or a string."""
    def like(part: str) -> str:
        return "%" + part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

    name, equals, value = text.partition("=")
    if equals and name.strip().isidentifier():
        name, value = name.strip(), value.strip()
        return [("params", like(f'"{name}": {value},')), ("params", like(f'"{name}": {value}}}')),
                ("params", like(f'"{name}": {json.dumps(value)}'))]
    return [("task_id", like(text)), ("params", like(text)), ("message", like(text))]


def _matches(record: TaskRecord, text: str | None) -> bool:
    if not text:
        return True
    for column, pattern in _needles(text):
        needle = pattern[1:-1].replace("\\%", "%").replace("\\_", "_").replace("\\\\", "\\").lower()
        if needle in (getattr(record, column) or "").lower():
            return True
    return False


class MemoryStore:
    """The store protocol in memory: fast, forgetful, for tests and throwaway runs.

    What skipping needs is kept compactly: a done task costs about 85 bytes (the digest of its
    id, as an integer in a set, under its plan), so a million finished tasks take about 80 MB;
    a failed task keeps its whole record (message included) and a page its follow-up, until it
    is done. For plans of millions of tasks use ``SQLiteStore``, whose memory stays flat."""

    def __init__(self) -> None:
        self._done: dict[str, set[int | str]] = {}  # id prefix ("plan" or "plan@run") → digests
        self._plan_of: dict[str, str] = {}  # id prefix → plan
        self._failed: dict[str, TaskRecord] = {}
        self._follow: dict[str, str] = {}  # task id → JSON parameters of its next page
        self._pending: list[TaskRecord] = []
        self._runs: dict[str, RunRecord] = {}
        self._usage: list[dict[str, Any]] = []
        self._positions: dict[str, dict[str, Any]] = {}
        self._settings: dict[str, Any] = {}

    def is_done(self, task_id: str) -> bool:
        prefix, digest = _split_id(task_id)
        done = self._done.get(prefix)
        return done is not None and digest in done

    def done_among(self, task_ids: list[str]) -> set[str]:
        return {task_id for task_id in task_ids if self.is_done(task_id)}

    def done_ids(self, plan: str, limit: int) -> set[str] | None:
        """Nothing done yet: an empty set (nothing to look up); else None (``is_done`` is as cheap)."""
        return None if any(self._plan_of[k] == plan and v for k, v in self._done.items()) else set()

    def follow_up(self, task_id: str) -> dict[str, Any] | None:
        found = self._follow.get(task_id)
        return json.loads(found) if found else None

    def has_follow_ups(self, plan: str) -> bool:
        return any(_split_id(task_id)[0] in self._prefixes(plan) for task_id in self._follow)

    def record(self, record: TaskRecord) -> None:
        self._pending.append(record)

    def flush(self) -> None:
        for record in self._pending:
            prefix, digest = _split_id(record.task_id)
            self._plan_of[prefix] = record.plan
            done = self._done.setdefault(prefix, set())
            if record.state == "done":
                done.add(digest)
                self._failed.pop(record.task_id, None)
            else:
                done.discard(digest)
                self._failed[record.task_id] = record
            if record.follow_up:
                self._follow[record.task_id] = record.follow_up
            else:
                self._follow.pop(record.task_id, None)
        self._pending.clear()

    def _prefixes(self, plan: str) -> set[str]:
        return {prefix for prefix, owner in self._plan_of.items() if owner == plan}

    def start_run(self, run: RunRecord, keep: int | None = None) -> None:
        old = self._runs.get(run.id)  # a run continued keeps its start and its counts so far
        if old is not None:
            run = RunRecord(run.id, run.plan, run.logical_time, old.started_at, run.state, None,
                            run.summary or old.summary)
        self._runs[run.id] = run
        if keep is not None:
            for old in self.history(run.plan)[keep:]:
                del self._runs[old.id]

    def end_run(self, run_id: str, state: str, ended_at: float, summary: dict[str, Any] | None = None) -> None:
        run = self._runs[run_id]
        self._runs[run_id] = RunRecord(run.id, run.plan, run.logical_time, run.started_at, state, ended_at, summary)

    def note_counts(self, run_id: str, counts: dict[str, Any]) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            self._runs[run_id] = RunRecord(run.id, run.plan, run.logical_time, run.started_at, run.state,
                                           run.ended_at, dict(counts))

    def runs(self, plan: str | None = None) -> list[RunRecord]:
        return [r for r in self._runs.values() if plan is None or r.plan == plan]

    def history(self, plan: str, limit: int | None = None) -> list[RunRecord]:
        runs = sorted(self.runs(plan), key=lambda r: r.started_at, reverse=True)
        return runs if limit is None else runs[:limit]

    def run_counts(self, plan: str, run_id: str) -> dict[str, int]:
        """Done as the run's counts say (done tasks keep only their digest here), failed exactly."""
        self.flush()
        failed = sum(1 for record in self._failed.values() if record.run_id == run_id)
        run = self._runs.get(run_id)
        return {"done": int((run.summary or {}).get("done", 0)) if run else 0, "failed": failed}

    def run_rows(self, plan: str, run_id: str) -> int:
        """Rows as the run's counts say (this store keeps no done task's rows)."""
        run = self._runs.get(run_id)
        return int((run.summary or {}).get("rows", 0)) if run else 0

    def failures(self, plan: str, limit: int) -> list[TaskRecord]:
        self.flush()
        return sorted((r for r in self._failed.values() if r.plan == plan), key=lambda r: r.at, reverse=True)[:limit]

    def find_tasks(self, plan: str | None, state: str | None, text: str | None, limit: int,
                   offset: int = 0) -> list[TaskRecord]:
        """Failed tasks only: a memory store keeps no more of a done task than its digest."""
        self.flush()
        if state not in (None, "failed"):
            return []
        found = [r for r in self._failed.values() if (plan is None or r.plan == plan) and _matches(r, text)]
        return sorted(found, key=lambda r: r.at, reverse=True)[offset:offset + limit]

    def failed_tasks(self, plan: str, task_ids: Sequence[str]) -> list[TaskRecord]:
        self.flush()
        return [r for t in task_ids if (r := self._failed.get(t)) is not None and r.plan == plan]

    def failed_ids(self, plan: str, run_id: str) -> set[str]:
        self.flush()
        return {task_id for task_id, record in self._failed.items() if record.run_id == run_id}

    def last_run(self, plan: str) -> RunRecord | None:
        runs = self.runs(plan)
        return max(runs, key=lambda r: r.started_at) if runs else None

    def task_states(self, plan: str) -> dict[str, int]:
        self.flush()
        counts: dict[str, int] = {}
        done = sum(len(self._done[prefix]) for prefix in self._prefixes(plan))
        if done:
            counts["done"] = done
        for record in self._failed.values():
            if record.plan == plan:
                counts[record.state] = counts.get(record.state, 0) + 1
        return counts

    def forget_plan(self, plan: str) -> None:
        self.flush()
        prefixes = self._prefixes(plan)
        for prefix in prefixes:
            del self._done[prefix]
            del self._plan_of[prefix]
        self._failed = {k: v for k, v in self._failed.items() if v.plan != plan}
        self._follow = {k: v for k, v in self._follow.items() if _split_id(k)[0] not in prefixes}
        self._positions = {k: v for k, v in self._positions.items() if not k.startswith(f"{plan}:")}

    def save_usage(self, records: list[dict[str, Any]]) -> None:
        self._usage = list(records)

    def load_usage(self) -> list[dict[str, Any]]:
        return list(self._usage)

    def save_position(self, task_id: str, position: dict[str, Any]) -> None:
        self._positions[task_id] = dict(position)

    def position(self, task_id: str) -> dict[str, Any] | None:
        found = self._positions.get(task_id)
        return dict(found) if found is not None else None

    def save_setting(self, key: str, value: Any) -> None:
        self._settings[key] = json.loads(json.dumps(value))  # a copy, as SQLite would keep

    def setting(self, key: str) -> Any:
        return self._settings.get(key)

    def close(self) -> None:
        self.flush()


def _split_id(task_id: str) -> tuple[str, int | str]:
    """``plan:0a1b...`` → (``plan``, the digest as an integer); an id of another shape keeps its text."""
    prefix, _, digest = task_id.rpartition(":")
    try:
        return prefix, int(digest, 16)
    except ValueError:
        return prefix, digest


_CACHE_KIB = 64 * 1024  # SQLite's page cache for the state file, at most

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    run_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    message TEXT,
    at REAL NOT NULL,
    follow_up TEXT,
    params TEXT,
    rows INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_by_plan ON tasks (plan, state);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    logical_time TEXT NOT NULL,
    started_at REAL NOT NULL,
    state TEXT NOT NULL,
    ended_at REAL,
    summary TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_plan ON runs (plan, started_at);
CREATE TABLE IF NOT EXISTS positions (
    task_id TEXT PRIMARY KEY,
    position TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    saved_at REAL NOT NULL,
    records TEXT NOT NULL
);
"""


class SQLiteStore:
    """The store protocol on SQLite in WAL mode: one file, safe against kill -9.

    ``synchronous=NORMAL`` in WAL mode loses nothing when the process dies; only a power cut can
    take the last commits, and those tasks simply run again. One process at a time writes a
    state file: a second one raises ``StateInUse`` naming the first (``wait``: waits for it).
    """

    def __init__(self, path: str | Path, *, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.path = str(path)
        self._lock: StateLock | None = None
        if self.path != ":memory:":
            _check_place(Path(self.path))  # before a lock file or a folder is made beside it
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateDamaged(self.path, f"its folder cannot be made: {disk_problem(exc)}",
                                   "fix the cause, or give --state a path in a folder you can write") from None
            self._lock = StateLock(self.path, wait=wait, on_wait=on_wait)
        try:
            if self.path != ":memory:":
                _check_file(Path(self.path))  # before anything could write to it
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._open()
        except (sqlite3.Error, OSError, StateDamaged) as exc:
            if self._lock is not None:
                self._lock.release()
            raise exc if isinstance(exc, StateDamaged) else _unusable(self.path, exc) from None
        self._pending: list[TaskRecord] = []
        self._counts: dict[str, str] = {}  # run id → its counts as JSON, for the next flush
        self._writer = Writer(self._db, self.path, StateUnwritable)

    def _open(self) -> None:
        """Check the file is whole and synctask's own, then bring its tables up to date."""
        db = self._db
        if self.path != ":memory:" and Path(self.path).stat().st_size > 0:
            problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise StateDamaged(self.path, f"pages inside it are damaged ({problem})")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            foreign = sorted(tables - _TABLES)
            if foreign:
                raise StateDamaged(self.path, f"it is the database of another program (tables {', '.join(foreign)})",
                                   "give --state a path of its own (synctask makes the file)")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        # Task ids are hashes, so outcomes land all over the index: a page cache that holds
        # it keeps big runs' commits from re-reading pages (it grows to this, then stays).
        db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
        if "follow_up" not in columns:  # a state file from before pagination
            db.execute("ALTER TABLE tasks ADD COLUMN follow_up TEXT")
        if "params" not in columns:  # a state file from before failed tasks kept their parameters
            db.execute("ALTER TABLE tasks ADD COLUMN params TEXT")
        if "rows" not in columns:  # a state file from before runs' rows were recounted from their outcomes
            db.execute("ALTER TABLE tasks ADD COLUMN rows INTEGER NOT NULL DEFAULT 0")

    def is_done(self, task_id: str) -> bool:
        row = self._one("SELECT state FROM tasks WHERE task_id = ?", (task_id,))
        return row is not None and row[0] == "done"

    def done_among(self, task_ids: list[str]) -> set[str]:
        """Which of ``task_ids`` are done: one indexed query per 500 ids, not one per id."""
        found: set[str] = set()
        for start in range(0, len(task_ids), 500):
            chunk = task_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._all(
                f"SELECT task_id FROM tasks WHERE state = 'done' AND task_id IN ({marks})", chunk))
        return found

    def done_ids(self, plan: str, limit: int) -> set[str] | None:
        """The ids of the plan's done tasks, or None when there are more than ``limit`` (then
        ``is_done`` answers, one lookup per task)."""
        ids = {r[0] for r in self._all(
            "SELECT task_id FROM tasks WHERE plan = ? AND state = 'done' LIMIT ?", (plan, limit + 1))}
        return ids if len(ids) <= limit else None

    def follow_up(self, task_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT follow_up FROM tasks WHERE task_id = ?", (task_id,))
        return json.loads(row[0]) if row and row[0] else None

    def has_follow_ups(self, plan: str) -> bool:
        return self._one("SELECT 1 FROM tasks WHERE plan = ? AND follow_up IS NOT NULL LIMIT 1", (plan,)) is not None

    def record(self, record: TaskRecord) -> None:
        self._pending.append(record)

    def flush(self) -> None:
        """Commit the outcomes recorded so far: a few at once, many by the writer thread (with any
        handed meanwhile, in one transaction), so the event loop never waits for a big commit.
        Every other method waits for the writer first, so reads see every outcome flushed."""
        if self._pending or self._counts:
            batch, self._pending = self._pending, []
            counts, self._counts = self._counts, {}
            self._writer.submit(batch, [(summary, run_id) for run_id, summary in counts.items()])

    def start_run(self, run: RunRecord, keep: int | None = None) -> None:
        """Record a run (a continued one keeps its id, start and counts so far); ``keep``: the plan's
        newest runs kept, older ones forgotten."""
        self._run_sql("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                      "state = excluded.state, ended_at = NULL, "
                      "summary = COALESCE(excluded.summary, runs.summary)",
                      (run.id, run.plan, run.logical_time, run.started_at, run.state, run.ended_at,
                       json.dumps(run.summary) if run.summary else None))
        if keep is not None:
            self._run_sql("DELETE FROM runs WHERE plan = ? AND id NOT IN "
                          "(SELECT id FROM runs WHERE plan = ? ORDER BY started_at DESC LIMIT ?)",
                          (run.plan, run.plan, keep))

    def note_counts(self, run_id: str, counts: dict[str, Any]) -> None:
        """A running run's counts so far, written with the next batch of outcomes (each usage save
        notes the runs still going; their done, failed and rows are recounted from the outcomes)."""
        self._counts[run_id] = json.dumps(counts)

    def end_run(self, run_id: str, state: str, ended_at: float, summary: dict[str, Any] | None = None) -> None:
        self.flush()
        self._run_sql("UPDATE runs SET state = ?, ended_at = ?, summary = ? WHERE id = ?",
                      (state, ended_at, json.dumps(summary) if summary else None, run_id))

    def runs(self, plan: str | None = None) -> list[RunRecord]:
        query = "SELECT id, plan, logical_time, started_at, state, ended_at, summary FROM runs"
        args: tuple[Any, ...] = ()
        if plan is not None:
            query += " WHERE plan = ?"
            args = (plan,)
        return [_run(row) for row in self._all(query + " ORDER BY started_at", args)]

    def history(self, plan: str, limit: int | None = None) -> list[RunRecord]:
        """The plan's runs, newest first (``limit``: at most so many)."""
        return [_run(row) for row in self._all(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE plan = ? ORDER BY started_at DESC LIMIT ?",
            (plan, -1 if limit is None else limit))]

    def failures(self, plan: str, limit: int) -> list[TaskRecord]:
        """The plan's failed tasks (not done since), the latest first."""
        return [TaskRecord(*row) for row in self._all(
            "SELECT task_id, plan, run_id, state, attempts, message, at, follow_up, params FROM tasks "
            "WHERE plan = ? AND state = 'failed' ORDER BY at DESC LIMIT ?", (plan, limit))]

    def find_tasks(self, plan: str | None, state: str | None, text: str | None, limit: int,
                   offset: int = 0) -> list[TaskRecord]:
        """Recorded task ends, newest first, of ``plan`` (None: every plan) in ``state`` whose id,
        parameters or message hold ``text`` (any case). Rowid order is the order they were
        recorded in, and the (plan, state) index holds it: no sort, however many tasks."""
        where: list[str] = ["run_id != ''"]  # not the plan-wide record of a rolling range's newest task
        args: list[Any] = []
        if plan is not None:
            where.append("plan = ?")
            args.append(plan)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if text:
            where.append("(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column, _ in _needles(text)) + ")")
            args += [like for _, like in _needles(text)]
        return [TaskRecord(*row) for row in self._all(
            "SELECT task_id, plan, run_id, state, attempts, message, at, follow_up, params FROM tasks "
            f"WHERE {' AND '.join(where)} ORDER BY rowid DESC LIMIT ? OFFSET ?", (*args, limit, offset))]

    def failed_tasks(self, plan: str, task_ids: Sequence[str]) -> list[TaskRecord]:
        """The records of these tasks of ``plan`` that are failed now (not done since)."""
        found: list[TaskRecord] = []
        for start in range(0, len(task_ids), 500):
            batch = list(task_ids[start:start + 500])
            found += [TaskRecord(*row) for row in self._all(
                "SELECT task_id, plan, run_id, state, attempts, message, at, follow_up, params FROM tasks "
                f"WHERE plan = ? AND state = 'failed' AND task_id IN ({', '.join('?' * len(batch))})",
                (plan, *batch))]
        return found

    def failed_ids(self, plan: str, run_id: str) -> set[str]:
        """The ids of the tasks that failed in run ``run_id`` (and are not done since)."""
        return {r[0] for r in self._all("SELECT task_id FROM tasks WHERE plan = ? AND state = 'failed' AND run_id = ?",
                                        (plan, run_id))}

    def run_counts(self, plan: str, run_id: str) -> dict[str, int]:
        """How many tasks the run left done and failed, as recorded (exact after a kill -9)."""
        return dict(self._all("SELECT state, COUNT(*) FROM tasks WHERE plan = ? AND run_id = ? GROUP BY state",
                              (plan, run_id)))

    def run_rows(self, plan: str, run_id: str) -> int:
        """The rows the run's done tasks wrote, as recorded with their outcomes (exact after a kill -9)."""
        row = self._one("SELECT SUM(rows) FROM tasks WHERE plan = ? AND run_id = ? AND state = 'done'", (plan, run_id))
        return int(row[0] or 0) if row else 0

    def last_run(self, plan: str) -> RunRecord | None:
        row = self._one("SELECT id, plan, logical_time, started_at, state, ended_at, summary FROM runs "
                        "WHERE plan = ? ORDER BY started_at DESC LIMIT 1", (plan,))
        return _run(row) if row else None

    def task_states(self, plan: str) -> dict[str, int]:
        return dict(self._all("SELECT state, COUNT(*) FROM tasks WHERE plan = ? GROUP BY state", (plan,)))

    def forget_plan(self, plan: str) -> None:
        self.flush()
        self._run_sql("DELETE FROM tasks WHERE plan = ?", (plan,))
        self._run_sql("DELETE FROM positions WHERE substr(task_id, 1, ?) = ?", (len(plan) + 1, f"{plan}:"))

    def save_usage(self, records: list[dict[str, Any]]) -> None:
        self._run_sql("INSERT OR REPLACE INTO usage VALUES (1, ?, ?)", (time.time(), json.dumps(records)))

    def load_usage(self) -> list[dict[str, Any]]:
        row = self._one("SELECT records FROM usage WHERE id = 1")
        return json.loads(row[0]) if row else []

    def save_position(self, task_id: str, position: dict[str, Any]) -> None:
        """Where a stream task got to; written at once (after its rows are in the sink)."""
        self._run_sql("INSERT OR REPLACE INTO positions VALUES (?, ?, ?)",
                      (task_id, json.dumps(position), time.time()))

    def position(self, task_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT position FROM positions WHERE task_id = ?", (task_id,))
        return json.loads(row[0]) if row else None

    def save_setting(self, key: str, value: Any) -> None:
        """Keep a JSON value under ``key`` (the daemon's plans and their states live here)."""
        self._run_sql("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, json.dumps(value)))

    def setting(self, key: str) -> Any:
        row = self._one("SELECT value FROM settings WHERE key = ?", (key,))
        return json.loads(row[0]) if row else None

    def close(self) -> None:
        try:
            self.flush()
            self._writer.close()
        finally:
            self._db.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    # Every statement but the outcomes' runs here, after the writer has committed what it was
    # handed (so a read sees every flushed outcome, and an update lands after them).
    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._writer.idle():
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                rollback_quietly(self._db)
                raise StateUnwritable(self.path, exc) from None

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = self._all(sql, args)
        return rows[0] if rows else None

    def _run_sql(self, sql: str, args: Sequence[Any] = ()) -> None:
        self._all(sql, args)


@contextlib.contextmanager
def _read_only(path: str | Path) -> Iterator[sqlite3.Connection]:
    """The state file opened read-only, without its lock (another process may be writing it)."""
    db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def read_usage(path: str | Path) -> list[dict[str, Any]]:
    """The quota usage a state file saved, read without its lock and without writing (a probe
    counts the sends of a run that may be going on); nothing when it cannot be read."""
    if not Path(path).is_file():
        return []
    try:
        with _read_only(path) as db:
            row = db.execute("SELECT records FROM usage WHERE id = 1").fetchone()
        return list(json.loads(row[0])) if row else []
    except (sqlite3.Error, ValueError):
        return []


class StateUnwritable(SyncError):
    """The state file could not be written (a full disk, a read-only folder, a damaged page): the
    run must end at once, since what it does next could not be remembered."""

    def __init__(self, path: str, cause: BaseException) -> None:
        self.path = path
        self.cause = disk_problem(cause, path)
        super().__init__(f"the state file {path} cannot be written: {self.cause}; synctask stopped sending "
                         "requests. What was recorded before is kept; fix the cause, then run the same command "
                         "again to go on from there")


class StateDamaged(SyncError):
    """The state file cannot be used as it is (damaged, another program's, not a file, on a disk
    that refuses it); it is left as is, and the message says what to do."""

    def __init__(self, path: str, why: str, advice: str | None = None) -> None:
        self.path = path
        damaged = advice is None
        if advice is None:  # a damaged file of its own: keep it for a look, start afresh
            advice = (f"move it aside (mv {shlex.quote(path)} {shlex.quote(path + '.damaged')}) and run again with a "
                      "fresh state: tasks done before run again, and the sinks keep each row once")
        super().__init__(f"the state file {path} is {'damaged' if damaged else 'unusable'} ({why}); synctask did "
                         f"not change it. {advice[0].upper()}{advice[1:]}")


_TABLES = {"tasks", "runs", "positions", "settings", "usage", "sqlite_sequence", "sqlite_stat1"}
_SYSTEM = ("/proc", "/sys")  # never a state file (nor is a device), and never named in advice to move


def _check_place(path: Path) -> None:
    """Refuse a path that cannot be a state file of its own: a folder, a device, a system file."""
    real = path.resolve()
    if real.is_dir():
        raise StateDamaged(str(path), "it is a folder", f"give --state a file, such as {path / 'state.db'}")
    if any(real.is_relative_to(root) for root in _SYSTEM) or (real.exists() and not real.is_file()):
        raise StateDamaged(str(path), "it is not a regular file of its own (a device or a system file)",
                           "give --state the path of a file for synctask alone, such as .synctask/state.db")


def _unusable(path: str, exc: BaseException) -> StateDamaged:
    """What failed while opening the state, as a ``StateDamaged`` with the right advice."""
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in str(exc) or "not a database" in str(exc)):
        return StateDamaged(path, str(exc))
    return StateDamaged(path, f"it cannot be opened: {disk_problem(exc, path)}",
                        "fix the cause (space, permissions, a read-only disk), or give --state another path")


_MAGIC = b"SQLite format 3\x00"


def _check_file(path: Path) -> None:
    """Refuse a file that is not a SQLite database, or shorter than its own header says (cut
    short by a copy or a full disk), without writing to it."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb") as handle:
        header = handle.read(100)
    if not header.startswith(_MAGIC) or len(header) < 100:
        raise StateDamaged(str(path), "it is not a SQLite database")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    counted = header[24:28] == header[92:96]  # the page count in the header is current
    has_wal = path.with_name(path.name + "-wal").exists()
    if counted and not has_wal and size < page_size * pages:
        raise StateDamaged(str(path), f"it is cut short: {size:,} bytes of {page_size * pages:,}")


_RUN_COLUMNS = "id, plan, logical_time, started_at, state, ended_at, summary"


def read_history(path: str | Path, plan: str, limit: int | None = None) -> tuple[list[RunRecord], list[str]]:
    """A plan's runs, newest first, and every plan with runs, read from a state file without its
    lock and without writing (a daemon or a run may be using it); raises ``StateDamaged`` when
    it cannot be read."""
    if not Path(path).is_file():
        raise StateDamaged(str(path), "there is no such file", "give --state the state file a run or a daemon wrote")
    try:
        with _read_only(path) as db:
            rows = db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE plan = ? ORDER BY started_at DESC LIMIT ?",
                              (plan, -1 if limit is None else limit)).fetchall()
            plans = [r[0] for r in db.execute("SELECT DISTINCT plan FROM runs ORDER BY plan")]
            runs = [_recounted(db, run) if run.state == "running" else run for run in map(_run, rows)]
    except sqlite3.Error as exc:
        raise _unusable(str(path), exc) from None
    return runs, plans


def _recounted(db: sqlite3.Connection, run: RunRecord) -> RunRecord:
    """A run whose record is not final (it goes, or its process was killed): its done, failed and
    rows from its outcomes, exact to the last commit (the rest of its counts as last saved)."""
    has_rows = any(column[1] == "rows" for column in db.execute("PRAGMA table_info(tasks)"))
    found = db.execute(f"SELECT state, COUNT(*), {'SUM(rows)' if has_rows else '0'} FROM tasks "
                       "WHERE plan = ? AND run_id = ? GROUP BY state", (run.plan, run.id)).fetchall()
    counts = {state: (count, rows) for state, count, rows in found}
    done, rows = counts.get("done", (0, 0))
    return replace(run, summary=recounted(run.summary, done, counts.get("failed", (0, 0))[0], int(rows or 0)))


def recounted(summary: dict[str, Any] | None, done: int, failed: int, rows: int) -> dict[str, Any]:
    """A run's counts as last saved, with done, failed and rows as its outcomes say (rows saved
    are kept when more: a stream's rows are in no outcome until it ends)."""
    saved = summary or {}
    return {**saved, "done": done, "failed": failed, "rows": max(int(saved.get("rows") or 0), rows)}


def _run(row: Iterable[Any]) -> RunRecord:
    id_, plan, logical, started, state, ended, summary = row
    return RunRecord(id_, plan, logical, started, state, ended, json.loads(summary) if summary else None)
