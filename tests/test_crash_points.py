"""kill -9 at exact moments of a Parquet compaction, in a real `synctask run` process; then a run
with nothing new repairs it: every key once, one file per partition, nothing left behind. And a
reader never sees a partition's old files and its compacted file together."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TASKS = 60

TASK_MODULE = '''
async def fetch(i):
    return [{"i": i, "part": i % 3, "value": i * 10}]
'''

PLAN_FILE = f'''
[vendors.local]
connector = "python:crash_tasks:fetch"

[datasets.numbers]
vendor = "local"
api = "python:crash_tasks:fetch"
sink = {{ kind = "parquet", path = "data/numbers", key = ["i"], partition_by = "part" }}

[[plans]]
name = "numbers"
dataset = "numbers"
params = {{ i = {{ from = 0, to = {TASKS - 1} }} }}
'''

# Runs the real command with one function of the Parquet sink replaced by one that kills the
# process (SIGKILL: no cleanup of any kind) at the named point of the first compaction.
KILLER = '''
import os, signal, sys
import synctask.sinks.parquet as parquet

point = os.environ["KILL_AT"]
original_swap, original_mark = parquet._swap, parquet._write_text_atomically

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def swap(fresh, live, old):
    if point == "before-swap":
        die()
    if point == "between-renames":  # a filesystem that cannot exchange: two renames
        os.rename(live, old)
        die()
    original_swap(fresh, live, old)
    if point == "after-swap":
        die()

def mark(target, text):
    if point == "before-mark":
        die()
    original_mark(target, text)

parquet._swap, parquet._write_text_atomically = swap, mark
from synctask.cli import main
sys.argv = ["synctask", *sys.argv[1:]]
main()
'''


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "crash_tasks.py").write_text(TASK_MODULE)
    (tmp_path / "plans.toml").write_text(PLAN_FILE)
    (tmp_path / "killer.py").write_text(KILLER)
    return tmp_path


def run(workdir: Path, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    command = [sys.executable, "-m", "synctask.cli"]
    if kill_at is not None:
        env["KILL_AT"] = kill_at
        command = [sys.executable, str(workdir / "killer.py")]
    return subprocess.run([*command, "run", str(workdir / "plans.toml"), "--plain"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=120)


def read_all(root: Path) -> list[tuple[int, int, int]]:
    import duckdb

    con = duckdb.connect()
    try:
        return sorted(con.execute(
            f"SELECT i, CAST(part AS INTEGER), value FROM read_parquet('{root}/*/*.parquet', hive_partitioning = true)"
        ).fetchall())
    finally:
        con.close()


@pytest.mark.parametrize("kill_at", ["before-mark", "before-swap", "between-renames", "after-swap"])
def test_kill_9_during_compaction_then_a_run_with_nothing_new_repairs_it(workdir, kill_at):
    killed = run(workdir, kill_at)
    assert killed.returncode == -9, killed.stderr
    root = workdir / "data" / "numbers"
    # Leftovers of a write killed half-way, too.
    stray = sorted(d for d in root.iterdir() if d.is_dir())[-1] / ".part-0123456789abcdef.parquet.1a2b3c4d.tmp"
    stray.write_bytes(b"PAR1 half a file")

    again = run(workdir)
    assert again.returncode == 0, again.stderr
    assert "skipped" in again.stdout  # nothing new was fetched
    assert read_all(root) == [(i, i % 3, i * 10) for i in range(TASKS)], "every key exactly once"
    for part in ("part=0", "part=1", "part=2"):
        assert [p.name.endswith(".parquet") for p in (root / part).iterdir()] == [True], f"{part}: one file"
    assert not (workdir / "data" / ".numbers.compacting").exists()


def test_a_reader_never_sees_old_files_and_the_compacted_one_together(tmp_path, monkeypatch):
    """After every filesystem change compaction makes, a reader of the dataset finds either the
    old files or the compacted one: never both (too many rows), never neither (too few)."""
    import asyncio

    import pyarrow.parquet as pq

    import synctask.sinks.parquet as parquet

    root = tmp_path / "bars"
    sink = parquet.ParquetSink(root, ["i"])
    seen: list[int] = []

    def read() -> None:
        if root.is_dir():
            seen.append(pq.read_table(root).num_rows)

    def watched(function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            read()
            return result
        return wrapper

    async def rounds() -> None:
        for r in range(3):
            for f in range(8):  # each round rewrites the same 80 keys in the same eight files
                await sink.write([{"i": k, "round": r} for k in range(f * 10, f * 10 + 10)])
            await sink.close()

    asyncio.run(sink.write([{"i": k, "round": -1} for k in range(80)]))
    asyncio.run(sink.close())
    for name in ("rename", "replace", "unlink"):
        monkeypatch.setattr(os, name, watched(getattr(os, name)))
    monkeypatch.setattr(parquet, "_exchange", watched(parquet._exchange))
    asyncio.run(rounds())
    assert len(seen) > 30, "the reader looked after each change"
    # Between compactions a folder holds the last compacted file and this round's per-write files
    # (80 + 80 rows); the compacted file beside the files it replaced would make 240.
    assert min(seen) >= 80 and max(seen) <= 160, sorted(set(seen))
    assert pq.read_table(root).num_rows == 80
