"""One suite, every store: what must survive a restart does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from synctask import MemoryStore, RunRecord, SQLiteStore, TaskRecord


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()


def test_a_recorded_task_is_done_only_after_flush(store):
    store.record(TaskRecord("p:1", "p", "r1", "done", 0, None, 1.0))
    assert not store.is_done("p:1")
    store.flush()
    assert store.is_done("p:1")


def test_failed_tasks_are_not_done(store):
    store.record(TaskRecord("p:2", "p", "r1", "failed", 3, "gave up", 1.0))
    store.flush()
    assert not store.is_done("p:2")
    assert store.task_states("p") == {"failed": 1}


def test_recording_the_same_task_twice_keeps_one_row(store):
    for state in ("failed", "done"):
        store.record(TaskRecord("p:3", "p", "r1", state, 0, None, 1.0))
    store.flush()
    assert store.task_states("p") == {"done": 1}


def test_runs_start_end_and_the_last_one_is_found(store):
    store.start_run(RunRecord("p:a", "p", "2026-11-25T00:00:00+00:00", 1.0, "running"))
    store.start_run(RunRecord("p:b", "p", "2026-11-25T01:00:00+00:00", 2.0, "running"))
    store.end_run("p:b", "interrupted", 3.0, {"done": 5})
    last = store.last_run("p")
    assert (last.id, last.state, last.summary) == ("p:b", "interrupted", {"done": 5})
    assert [r.id for r in store.runs("p")] == ["p:a", "p:b"]
    assert store.last_run("other") is None


def test_history_is_newest_first_bounded_per_plan_and_a_continued_run_keeps_its_start_and_counts(store):
    for i in range(5):
        store.start_run(RunRecord(f"p:{i}", "p", f"2026-11-2{i}T00:00:00+00:00", float(i), "running"), keep=3)
        store.end_run(f"p:{i}", "completed", i + 0.5, {"done": i})
    store.start_run(RunRecord("q:0", "q", "2026-11-20T00:00:00+00:00", 9.0, "running"), keep=3)
    assert [r.id for r in store.history("p")] == ["p:4", "p:3", "p:2"]  # the two oldest forgotten
    assert [r.id for r in store.history("p", 2)] == ["p:4", "p:3"] and [r.id for r in store.history("q")] == ["q:0"]
    store.start_run(RunRecord("p:3", "p", "2026-11-23T00:00:00+00:00", 20.0, "running"), keep=3)
    again = next(r for r in store.history("p") if r.id == "p:3")
    assert (again.started_at, again.state, again.ended_at, again.summary) == (3.0, "running", None, {"done": 3})


def test_counts_noted_are_written_with_the_next_outcomes(store):
    store.start_run(RunRecord("p:r", "p", "2026-11-25T00:00:00+00:00", 1.0, "running"))
    store.record(TaskRecord("p:1", "p", "p:r", "done", 1, None, 1.0))
    store.record(TaskRecord("p:2", "p", "p:r", "failed", 3, "gone", 2.0, None, '{"day": "2026-11-25"}'))
    store.note_counts("p:r", {"done": 1, "failed": 1, "rows": 7})
    store.flush()
    assert store.last_run("p").summary == {"done": 1, "failed": 1, "rows": 7}
    assert store.run_counts("p", "p:r") == {"done": 1, "failed": 1}
    assert store.failed_ids("p", "p:r") == {"p:2"} and store.failed_ids("p", "p:other") == set()
    [failure] = store.failures("p", 10)
    assert (failure.task_id, failure.message, failure.attempts, failure.params) == (
        "p:2", "gone", 3, '{"day": "2026-11-25"}')


def test_a_runs_rows_are_recounted_from_the_outcomes_of_its_done_tasks(store):
    store.start_run(RunRecord("p:r", "p", "2026-11-25T00:00:00+00:00", 1.0, "running"))
    store.record(TaskRecord("p:1", "p", "p:r", "done", 1, None, 1.0, rows=10))
    store.record(TaskRecord("p:2", "p", "p:r", "done", 1, None, 1.0, '{"cursor": "b"}', rows=20))
    store.record(TaskRecord("p:3", "p", "p:r", "failed", 3, "gone", 2.0, None, "{}"))
    store.record(TaskRecord("p:4", "p", "p:other", "done", 1, None, 1.0, rows=5))
    store.note_counts("p:r", {"done": 2, "failed": 1, "rows": 30})
    store.flush()
    assert store.run_rows("p", "p:r") == 30 and store.run_rows("p", "p:nope") == 0


def test_a_state_file_from_before_rows_were_kept_opens_and_keeps_them_from_then_on(tmp_path):
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:  # the tasks table as it was (no rows column)
        db.execute("CREATE TABLE tasks (task_id TEXT PRIMARY KEY, plan TEXT NOT NULL, run_id TEXT NOT NULL, "
                   "state TEXT NOT NULL, attempts INTEGER NOT NULL, message TEXT, at REAL NOT NULL, "
                   "follow_up TEXT, params TEXT)")
        db.execute("INSERT INTO tasks VALUES ('p:1', 'p', 'p:r', 'done', 1, NULL, 1.0, NULL, NULL)")
    db.close()
    store = SQLiteStore(path)
    assert store.is_done("p:1") and store.run_rows("p", "p:r") == 0
    store.record(TaskRecord("p:2", "p", "p:r", "done", 1, None, 2.0, rows=7))
    store.flush()
    assert store.run_rows("p", "p:r") == 7
    store.close()


def test_history_read_from_a_file_recounts_a_run_whose_record_is_not_final(tmp_path):
    """A run killed mid-way left its counts as last saved; its outcomes say more, exactly."""
    from synctask.store import read_history

    store = SQLiteStore(tmp_path / "state.db")
    store.start_run(RunRecord("p:r", "p", "2026-11-25T00:00:00+00:00", 1.0, "running"))
    store.start_run(RunRecord("p:q", "p", "2026-11-24T00:00:00+00:00", 0.5, "running"))
    store.end_run("p:q", "completed", 0.9, {"done": 1, "failed": 0, "rows": 3, "retries": 2})
    store.note_counts("p:r", {"done": 1, "failed": 0, "rows": 10, "retries": 4})
    store.record(TaskRecord("p:1", "p", "p:r", "done", 1, None, 1.0, rows=10))
    store.flush()
    store.record(TaskRecord("p:2", "p", "p:r", "done", 1, None, 1.0, rows=20))
    store.record(TaskRecord("p:3", "p", "p:r", "failed", 3, "gone", 2.0, None, "{}"))
    store.flush()  # (no counts noted with these: a kill -9 now)
    runs, plans = read_history(tmp_path / "state.db", "p")
    assert plans == ["p"] and [r.id for r in runs] == ["p:r", "p:q"]
    assert runs[0].summary == {"done": 2, "failed": 1, "rows": 30, "retries": 4}
    assert runs[1].summary == {"done": 1, "failed": 0, "rows": 3, "retries": 2}  # final: as recorded
    store.close()


def test_usage_round_trips(store):
    records = [{"scope": "dataset:d", "rate": 10, "per": 86400.0, "clock": True, "tz": None,
                "window_start": 0.0, "used": 3}]
    store.save_usage(records)
    assert store.load_usage() == records


def test_forget_plan_clears_its_tasks_only(store):
    store.record(TaskRecord("p:1", "p", "r", "done", 0, None, 1.0))
    store.record(TaskRecord("q:1", "q", "r", "done", 0, None, 1.0))
    store.forget_plan("p")
    assert not store.is_done("p:1") and store.is_done("q:1")


def test_stream_positions_round_trip_and_go_with_their_plan(store):
    assert store.position("p:1") is None
    store.save_position("p:1", {"next_seq": 120, "received": 120})
    store.save_position("p:1", {"next_seq": 240, "received": 240})  # the latest wins
    store.save_position("pq:1", {"next_seq": 7, "received": 7})  # a plan whose name starts the same
    assert store.position("p:1") == {"next_seq": 240, "received": 240}
    store.forget_plan("p")
    assert store.position("p:1") is None and store.position("pq:1") == {"next_seq": 7, "received": 7}


def test_sqlite_state_survives_reopening(tmp_path):
    first = SQLiteStore(tmp_path / "s.db")
    first.record(TaskRecord("p:1", "p", "r", "done", 0, None, 1.0))
    first.close()
    second = SQLiteStore(tmp_path / "s.db")
    assert second.is_done("p:1")
    assert second._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    second.close()


def test_done_ids_gives_the_set_up_to_a_limit(store):
    for i in range(5):
        store.record(TaskRecord(f"p:{i}", "p", "r", "done" if i < 4 else "failed", 0, None, 1.0))
    store.flush()
    got = store.done_ids("p", 10)
    assert got is None or got == {"p:0", "p:1", "p:2", "p:3"}  # None: is_done is the way to ask
    assert [store.is_done(f"p:{i}") for i in range(5)] == [True, True, True, True, False]
    assert store.done_ids("p", 3) is None
    assert store.done_ids("q", 3) == set()


def test_follow_ups_are_kept_for_resuming_paginated_runs(store):
    store.record(TaskRecord("p:1", "p", "r", "done", 0, None, 1.0, '{"day": "2024-01-01", "page": 2}'))
    store.record(TaskRecord("q:1", "q", "r", "done", 0, None, 1.0))
    store.flush()
    assert store.follow_up("p:1") == {"day": "2024-01-01", "page": 2}
    assert store.follow_up("q:1") is None and store.follow_up("nope") is None
    assert store.has_follow_ups("p") and not store.has_follow_ups("q")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_state_file_is_named_and_never_overwritten(tmp_path, damage):
    from synctask.store import StateDamaged

    path = tmp_path / "state.db"
    if damage == "garbage":
        path.write_bytes(b"this is not a database\n" * 200)
    else:
        store = SQLiteStore(path)
        for i in range(2000):
            store.record(TaskRecord(f"p:{i}", "p", "r", "done", 0, "x" * 50, 1.0))
        store.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    before = path.read_bytes()
    with pytest.raises(StateDamaged, match=rf"the state file {path} is damaged .*mv {path} {path}.damaged"):
        SQLiteStore(path)
    assert path.read_bytes() == before
    with pytest.raises(StateDamaged):  # again: damaged, not "in use" (the lock was let go)
        SQLiteStore(path)


@pytest.mark.parametrize("count", [1, 7, 4_000, 5_000, 12_345])
def test_sqlite_writer_keeps_every_field_of_every_record_in_any_batch_size(tmp_path, count):
    """The writer inserts many rows per statement (4,000, then powers of two): none lost or changed."""
    store = SQLiteStore(tmp_path / "state.db")
    records = [TaskRecord(f"p:{i}", "p", "r1", "failed" if i % 3 else "done", i % 4, f"it's \"odd\" {i} ünï",
                          1000.5 + i, '{"page": 2}' if i == 5 else None) for i in range(count)]
    for record in records:
        store.record(record)
    store.flush()
    assert sum(store.task_states("p").values()) == count
    store.close()
    import sqlite3

    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT task_id, plan, run_id, state, attempts, message, at, follow_up FROM tasks "
                          "ORDER BY at").fetchall()
    assert [TaskRecord(*row) for row in rows] == records


def test_sqlite_store_commits_a_small_batch_at_once_and_hands_a_large_one_to_its_writer(tmp_path):
    """A turn's few outcomes are committed in the caller's thread (no hand-over to a thread, whose
    GIL hand-overs cost the event loop more than the commit); many go to the writer thread."""
    import sqlite3
    import threading

    store = SQLiteStore(tmp_path / "state.db")
    for i in range(5):
        store.record(TaskRecord(f"p:{i}", "p", "r1", "done", 0, None, 1.0))
    store.flush()
    with sqlite3.connect(tmp_path / "state.db") as other:  # committed when flush returned
        assert other.execute("SELECT COUNT(*) FROM tasks").fetchone() == (5,)
    assert "synctask-store-writer" not in {thread.name for thread in threading.enumerate()}
    for i in range(5, 5 + 1000):
        store.record(TaskRecord(f"p:{i}", "p", "r1", "done", 0, None, 1.0))
    store.flush()
    assert "synctask-store-writer" in {thread.name for thread in threading.enumerate()}
    assert store.task_states("p") == {"done": 1005}
    store.close()


def _corrupt_inside(path):
    """A valid header with random pages inside, as `dd if=/dev/urandom seek=5 count=3 conv=notrunc` leaves it."""
    import random

    store = SQLiteStore(path)
    for i in range(3000):
        store.record(TaskRecord(f"p:{i}", "p", "r", "done", 0, "x" * 50, 1.0))
    store.close()
    data = bytearray(path.read_bytes())
    noise = random.Random(7).randbytes(3 * 4096)
    data[5 * 4096: 8 * 4096] = noise
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case", ["pages", "foreign", "folder", "device", "proc"])
def test_every_unusable_state_is_a_sentence_and_never_advises_moving_a_system_file(tmp_path, case):
    from synctask.store import StateDamaged

    path = tmp_path / "state.db"
    if case == "pages":
        _corrupt_inside(path)
    elif case == "foreign":
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
        db.commit()
        db.close()
    elif case == "folder":
        path.mkdir()
    elif case == "device":
        path = Path("/dev/null")
    else:
        path = Path("/proc/version")
    before = path.read_bytes() if path.is_file() and case != "proc" else None
    with pytest.raises(StateDamaged) as caught:
        SQLiteStore(path)
    said = str(caught.value)
    assert str(path) in said
    if case in ("device", "proc", "folder", "foreign"):
        assert "mv " not in said, said
    if case == "pages":
        assert "damaged" in said and "mv " in said
    if before is not None:
        assert path.read_bytes() == before  # left as it was
    assert not Path(str(path) + ".lock").exists() or case in ("pages", "foreign")


def test_a_symlink_to_the_state_shares_its_lock(tmp_path):
    from synctask.lock import StateInUse

    first = SQLiteStore(tmp_path / "state.db")
    (tmp_path / "alias.db").symlink_to(tmp_path / "state.db")
    try:
        with pytest.raises(StateInUse):
            SQLiteStore(tmp_path / "alias.db")
        with pytest.raises(StateInUse):
            SQLiteStore(tmp_path / "sub" / ".." / "state.db")
    finally:
        first.close()


def test_the_store_knows_a_task_records_fields_in_order():
    """The writer inserts a record's fields as its own list of columns (it cannot import the record)."""
    from synctask.writer import _COLUMNS

    assert _COLUMNS == TaskRecord._fields
