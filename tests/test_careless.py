"""Careless-user traps, in real processes: a sink that moved between runs, a sink over the plan
file or the state, misspelled sink keys. Each is refused with the place and the fix, nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TASK = "async def fetch(i):\n    return [{'i': i}]\n"
PLANS = '''
[vendors.v]
connector = "python:careless_tasks:fetch"

[datasets.d]
vendor = "v"
sink = {{ kind = "{kind}", path = "{path}", key = ["i"] }}

[[plans]]
name = "p"
dataset = "d"
params = {{ i = {{ from = 1, to = 30 }} }}
'''


def synctask(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synctask.cli", *args], cwd=folder, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(folder)})


def write(folder: Path, kind: str, path: str) -> None:
    (folder / "careless_tasks.py").write_text(TASK)
    (folder / "plans.toml").write_text(PLANS.format(kind=kind, path=path))


@pytest.mark.parametrize("kind,first,second", [("jsonl", "a.jsonl", "b.jsonl"), ("sqlite", "a.db", "b.db"),
                                               ("parquet", "a", "b")])
def test_a_sink_that_moved_is_named_and_refetch_fills_the_new_place(tmp_path, kind, first, second):
    write(tmp_path, kind, first)
    assert synctask(tmp_path, "run", "plans.toml", "--plain").returncode == 0
    write(tmp_path, kind, second)
    moved = synctask(tmp_path, "run", "plans.toml", "--plain")
    said = moved.stderr
    assert moved.returncode == 2 and "Traceback" not in said, said
    assert str(tmp_path / first) in said and str(tmp_path / second) in said and "30 finished tasks" in said
    assert "--refetch d" in said
    assert not (tmp_path / second).exists()  # nothing was run
    again = synctask(tmp_path, "run", "plans.toml", "--plain", "--refetch", "d")
    assert again.returncode == 0, again.stderr
    assert "30 " in again.stdout and "completed" in again.stdout
    assert synctask(tmp_path, "run", "plans.toml", "--plain").returncode == 0  # the new place is remembered
    wrong = synctask(tmp_path, "run", "plans.toml", "--refetch", "dd")
    assert wrong.returncode == 2 and "unknown dataset 'dd' (did you mean 'd'?)" in wrong.stderr


def test_a_sink_over_the_plan_file_or_the_state_is_refused(tmp_path):
    write(tmp_path, "jsonl", "plans.toml")
    before = (tmp_path / "plans.toml").read_text()
    for command in ("check", "run"):
        result = synctask(tmp_path, command, "plans.toml")
        assert result.returncode == 2 and "datasets.d.sink.path" in result.stderr and "plan file" in result.stderr
    assert (tmp_path / "plans.toml").read_text() == before
    write(tmp_path, "jsonl", ".synctask/state.db")
    result = synctask(tmp_path, "run", "plans.toml")
    assert result.returncode == 2 and "is the state file" in result.stderr, result.stderr


@pytest.mark.parametrize("extra,expected", [
    ('tabel = "t"', "unknown key 'tabel' for a sqlite sink (did you mean 'table'?)"),
    ('partiton_by = "day"', "unknown key 'partiton_by' for a sqlite sink"),
    ("table = []", "table must be a non-empty string, got []"),
])
def test_unknown_or_mistyped_sink_keys_are_errors_with_a_suggestion(tmp_path, extra, expected):
    write(tmp_path, "sqlite", "a.db")
    text = (tmp_path / "plans.toml").read_text().replace('key = ["i"] }', f'key = ["i"], {extra} }}')
    (tmp_path / "plans.toml").write_text(text)
    result = synctask(tmp_path, "check", "plans.toml")
    assert result.returncode == 2 and "datasets.d.sink" in result.stderr and expected in result.stderr, result.stderr
