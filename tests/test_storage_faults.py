"""Storage faults in real processes: the state or a sink on a disk that fills up (a small tmpfs
where this machine lets us mount one, else a file-size limit that makes writes fail the same
way). The run ends within seconds with exit 1, names the path and the cause, prints no
traceback, stops spending requests, and a run with room again finishes only what is left."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TASKS = '''
import asyncio, os

async def fetch(i):
    with open(os.environ["FETCH_LOG"], "a") as log:  # every request the vendor would see
        log.write(f"{i}\\n")
    await asyncio.sleep(0.002)
    return [{"i": i, "payload": "x" * 200}]
'''

PLANS = '''
[vendors.local]
connector = "python:disk_tasks:fetch"

[datasets.items]
vendor = "local"
sink = {{ kind = "{kind}", path = "{sink}", key = ["i"] }}

[[plans]]
name = "items"
dataset = "items"
params = {{ i = {{ from = 1, to = {n} }} }}
'''


@contextmanager
def small_disk(tmp_path: Path, kib: int) -> Iterator[tuple[Path, dict]]:
    """A folder on a full-able disk and the ``subprocess`` arguments that go with it: a tmpfs of
    ``kib`` KiB when mounting works, else the folder as is with a file-size limit of ``kib`` KiB."""
    folder = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0 if shutil.which("mount") and os.geteuid() == 0 else False
    try:
        if mounted:
            yield folder, {}
        else:
            def limit() -> None:  # writes past the limit fail with EFBIG instead of killing the process
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))
            yield folder, {"preexec_fn": limit}
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def run(workdir: Path, *args: str, extra: dict | None = None, timeout: float = 120) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(workdir), "FETCH_LOG": str(workdir / "fetches.log")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "synctask.cli", "run", str(workdir / "plans.toml"), "--plain",
                             *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
                            **(extra or {}))
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def fetched(workdir: Path) -> list[int]:
    log = workdir / "fetches.log"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def test_a_full_disk_under_the_state_ends_the_run_at_once_and_a_rerun_finishes_the_rest(tmp_path):
    n = 3_000
    (tmp_path / "disk_tasks.py").write_text(TASKS)
    (tmp_path / "plans.toml").write_text(PLANS.format(kind="sqlite", sink="items.db", n=n))
    with small_disk(tmp_path, 256) as (disk, extra):
        state = disk / "state.db"
        code, said, took = run(tmp_path, "--state", str(state), extra=extra)
        assert code == 1, said
        assert "Traceback" not in said and "Exception in callback" not in said, said
        assert str(state) in said and ("ENOSPC" in said or "EFBIG" in said), said
        assert "resume" in said.lower(), said
        assert took < 60, took
        first = fetched(tmp_path)
        assert len(first) < n, "the run went on spending requests after the state could not be written"
        saved = tmp_path / "saved-state.db"
        for suffix in ("", "-wal"):
            if (disk / f"state.db{suffix}").exists():
                shutil.copy(disk / f"state.db{suffix}", tmp_path / f"saved-state.db{suffix}")
    # Room again: the state (as far as it was committed) on a disk with space; only the rest runs.
    code, said, _ = run(tmp_path, "--state", str(saved))
    assert code == 0, said
    second = fetched(tmp_path)[len(first):]
    assert set(first) | set(second) == set(range(1, n + 1))
    recorded_before = n - len(second)
    assert len(first) - recorded_before <= 200, (len(first), recorded_before)  # what was in flight, not a flood


@pytest.mark.parametrize("kind", ["sqlite", "duckdb", "parquet", "jsonl"])
def test_a_full_disk_under_a_sink_names_the_disk_and_prints_no_traceback(tmp_path, kind):
    (tmp_path / "disk_tasks.py").write_text(TASKS)
    with small_disk(tmp_path, 192) as (disk, extra):
        sink = disk / ("items" if kind == "parquet" else f"items.{kind}")
        (tmp_path / "plans.toml").write_text(PLANS.format(kind=kind, sink=sink, n=4_000))
        code, said, took = run(tmp_path, "--state", str(tmp_path / "state.db"), extra=extra)
    assert code == 1, said
    assert "Traceback" not in said and "no transaction is active" not in said, said
    assert "ENOSPC" in said or "EFBIG" in said, said
    assert str(sink) in said, said
    assert took < 60, took
    assert len(fetched(tmp_path)) < 4_000
