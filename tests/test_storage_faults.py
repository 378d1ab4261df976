"""Storage faults in real processes: the state or a sink on a disk that fills up (a small tmpfs,
mounted as root or in a user namespace, around the command). The run ends within seconds with
exit 1, names the path and the cause, prints no traceback, stops spending requests, and a run
with room again finishes only what is left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


WRAP = '''
set -u
disk="$1"; options="$2"; shift 2
mount -t tmpfs -o "$options" tmpfs "$disk" || exit 97
"$@"; code=$?
mkdir -p "$disk.copy" && cp -a "$disk"/. "$disk.copy"/
umount -l "$disk"
exit $code
'''


def small_disk_prefix(folder: Path, kib: int, *, read_only: bool = False) -> list[str]:
    """A command prefix that runs a command with ``folder`` as a tmpfs of ``kib`` KiB (as root, or
    in a user namespace where this machine allows one), read-only if asked; what the disk held is
    copied to ``folder.copy`` at the end. Skips the test where neither works."""
    folder.mkdir()
    prefix = ["sh", "-c", WRAP, "wrap", str(folder), f"size={kib}k" + (",ro" if read_only else "")]
    if os.geteuid() == 0 and not os.environ.get("SYNCTASK_TEST_NO_MOUNT"):
        return prefix
    if shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rm", *prefix]
    pytest.skip("cannot mount a small tmpfs here (not root, and no user namespaces)")


def run(workdir: Path, *args: str, prefix: list[str] | None = None, timeout: float = 120) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(workdir), "FETCH_LOG": str(workdir / "fetches.log")}
    started = time.monotonic()
    result = subprocess.run([*(prefix or []), sys.executable, "-m", "synctask.cli", "run",
                             str(workdir / "plans.toml"), "--plain", *args],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode != 97, "could not mount the small disk: " + result.stderr
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def fetched(workdir: Path) -> list[int]:
    log = workdir / "fetches.log"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def test_a_full_disk_under_the_state_ends_the_run_at_once_and_a_rerun_finishes_the_rest(tmp_path):
    n = 3_000
    (tmp_path / "disk_tasks.py").write_text(TASKS)
    (tmp_path / "plans.toml").write_text(PLANS.format(kind="sqlite", sink="items.db", n=n))
    disk = tmp_path / "disk"
    state = disk / "state.db"
    code, said, took = run(tmp_path, "--state", str(state), prefix=small_disk_prefix(disk, 256))
    assert code == 1, said
    assert "Traceback" not in said and "Exception in callback" not in said, said
    assert str(state) in said and "ENOSPC" in said, said
    assert "resume" in said.lower(), said
    assert took < 60, took
    first = fetched(tmp_path)
    assert len(first) < n, "the run went on spending requests after the state could not be written"
    saved = tmp_path / "disk.copy" / "state.db"
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
    disk = tmp_path / "disk"
    sink = disk / ("items" if kind == "parquet" else f"items.{kind}")
    (tmp_path / "plans.toml").write_text(PLANS.format(kind=kind, sink=sink, n=4_000))
    code, said, took = run(tmp_path, "--state", str(tmp_path / "state.db"), prefix=small_disk_prefix(disk, 192))
    assert code == 1, said
    assert "Traceback" not in said and "no transaction is active" not in said, said
    assert "ENOSPC" in said, said
    assert str(sink) in said, said
    assert took < 60, took
    assert len(fetched(tmp_path)) < 4_000


def test_a_read_only_disk_under_a_sink_is_named_erofs(tmp_path):
    (tmp_path / "disk_tasks.py").write_text(TASKS)
    disk = tmp_path / "disk"
    sink = disk / "items.db"
    (tmp_path / "plans.toml").write_text(PLANS.format(kind="sqlite", sink=sink, n=500))
    code, said, _ = run(tmp_path, "--state", str(tmp_path / "state.db"),
                        prefix=small_disk_prefix(disk, 256, read_only=True))
    assert code == 1 and "Traceback" not in said, said
    assert str(sink) in said and "read-only (EROFS)" in said, said
