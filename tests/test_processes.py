"""Real processes: Ctrl-C once, twice, and kill -9 at random moments, then a re-run completes
the data with no row missing, none duplicated, and no finished task run again."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

TASKS = 300

TASK_MODULE = '''
import asyncio, os, time

async def fetch(i):
    started = time.time()
    await asyncio.sleep(float(os.environ.get("TASK_LATENCY", "0.05")))
    with open(os.environ["TASK_LOG"], "a") as log:   # one line per finished fetch, any process
        log.write(f"{os.getpid()} {i} {started}\\n")
    return [{"i": i, "double": 2 * i}]
'''

PLAN_FILE = f'''
[vendors.local]
connector = "python:proc_tasks:fetch"
limits = [{{ rate = 150, per = "1s" }}]

[datasets.numbers]
vendor = "local"
api = "python:proc_tasks:fetch"
sink = {{ kind = "sqlite", path = "data.db", key = ["i"] }}

[[plans]]
name = "numbers"
dataset = "numbers"
params = {{ i = {{ from = 0, to = {TASKS - 1} }} }}
retry = {{ attempts = 3, backoff = "0.1s..1s" }}
'''


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "proc_tasks.py").write_text(TASK_MODULE)
    (tmp_path / "plans.toml").write_text(PLAN_FILE)
    return tmp_path


def start(workdir: Path, *extra: str, latency: float = 0.05) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(workdir), "TASK_LOG": str(workdir / "fetch.log"),
           "TASK_LATENCY": str(latency)}
    return subprocess.Popen(
        [sys.executable, "-m", "synctask.cli", "run", str(workdir / "plans.toml"), "--plain", "--workers", "16",
         *extra],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def rows(workdir: Path) -> list[tuple[int, int]]:
    if not (workdir / "data.db").exists():
        return []
    db = sqlite3.connect(workdir / "data.db")
    try:
        return db.execute('SELECT i, "double" FROM numbers ORDER BY i').fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def done_ids(workdir: Path) -> set[str]:
    path = workdir / ".synctask" / "state.db"
    if not path.exists():
        return set()
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT task_id FROM tasks WHERE state = 'done'")}
    except sqlite3.OperationalError:
        return set()
    finally:
        db.close()


def wait_for_rows(workdir: Path, at_least: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(rows(workdir)) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} rows after {timeout}s")


def assert_complete(workdir: Path) -> None:
    data = rows(workdir)
    assert data == [(i, 2 * i) for i in range(TASKS)], "every row exactly once"
    assert len(done_ids(workdir)) == TASKS


def finish(workdir: Path) -> subprocess.CompletedProcess[str]:
    proc = start(workdir)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_first_ctrl_c_stops_gracefully_saves_and_prints_the_resume_command(workdir):
    proc = start(workdir)
    wait_for_rows(workdir, 60)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Resume with: synctask run" in err
    assert "Traceback" not in err
    assert re.search(r"numbers\s+interrupted\s", out), out  # not "running", and no stale retry message
    saved = done_ids(workdir)
    assert 60 <= len(saved) < TASKS
    # In-flight tasks were allowed to finish: every fetched task is recorded done.
    fetched = {line.split()[1] for line in (workdir / "fetch.log").read_text().splitlines()}
    assert len(fetched) == len(saved)
    result = finish(workdir)
    assert "skipped" in result.stdout
    assert_complete(workdir)


def test_second_ctrl_c_cancels_at_once_and_still_saves(workdir):
    proc = start(workdir, "--grace", "60", latency=3.0)
    time.sleep(2.0)  # started, 16 tasks in flight that take 3 s each
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 5.0, "the second Ctrl-C must not wait for the grace period"
    assert proc.returncode == 130, err
    db = sqlite3.connect(workdir / ".synctask" / "state.db")
    assert db.execute("SELECT state FROM runs").fetchall() == [("interrupted",)]
    db.close()
    finish(workdir)
    assert_complete(workdir)


def test_kill_9_at_random_moments_loses_nothing_and_duplicates_nothing(workdir):
    rng = random.Random(int(os.environ.get("SYNCTASK_KILL_SEED", "7")))
    recorded_before: set[str] = set()
    log = workdir / "fetch.log"
    for _ in range(3):
        fetched = len(log.read_text().splitlines()) if log.exists() else 0
        proc = start(workdir)
        deadline = time.monotonic() + 60  # a random moment once it fetches (a busy machine starts it slowly)
        while (not log.exists() or len(log.read_text().splitlines()) == fetched) and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never fetched anything"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.communicate(timeout=10)
        now_recorded = done_ids(workdir)
        assert recorded_before <= now_recorded, "recorded work is never lost"
        recorded_before = now_recorded
        data = rows(workdir)
        assert len(data) == len(set(data)), "no duplicate rows even mid-run"
        # Written but not recorded: fetched again on resume. At most what was in flight (16).
        assert len(data) - len(now_recorded) <= 16, f"{len(data)} rows written, {len(now_recorded)} recorded"
    log_before = len((workdir / "fetch.log").read_text().splitlines())
    finish(workdir)
    assert_complete(workdir)
    # The final run fetched only what was not recorded done.
    rerun = (workdir / "fetch.log").read_text().splitlines()[log_before:]
    assert len(rerun) == TASKS - len(recorded_before)


def test_a_restart_right_after_kill_9_still_keeps_the_window(workdir):
    # 20 per 10 s: the first process sends its 20 at once, has its usage saved, and is killed;
    # a second one started right away must wait for the same window, not send 20 more.
    text = (workdir / "plans.toml").read_text().replace('{ rate = 150, per = "1s" }', '{ rate = 20, per = "10s" }')
    (workdir / "plans.toml").write_text(text)
    first = start(workdir, latency=0.01)
    wait_for_rows(workdir, 20)
    time.sleep(1.5)  # usage is saved about every second
    first.kill()
    first.communicate(timeout=10)
    second = start(workdir, latency=0.01)
    time.sleep(4.0)
    second.kill()
    second.communicate(timeout=10)
    starts = sorted(float(line.split()[2]) for line in (workdir / "fetch.log").read_text().splitlines())
    assert len(starts) >= 20
    busiest = max(sum(1 for t in starts if s <= t < s + 10.0) for s in starts)
    assert busiest == 20, f"{busiest} sends in one 10 s window across the two processes"


def test_a_second_process_on_the_same_state_is_refused_at_once_naming_the_first(workdir):
    first = start(workdir, latency=0.5)
    try:
        wait_for_rows(workdir, 16)
        began = time.monotonic()
        second = start(workdir)
        _, err = second.communicate(timeout=30)
        assert time.monotonic() - began < 10, "refused at once, not after fetching"
        assert second.returncode == 75, err
        assert f"PID {first.pid}" in err and "state.db" in err and "--wait" in err
        assert "Traceback" not in err
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
    fetched = (workdir / "fetch.log").read_text().splitlines()
    assert {line.split()[0] for line in fetched} == {str(first.pid)}, "the second process fetched nothing"


def test_wait_starts_when_the_first_process_ends(workdir):
    import selectors

    first = start(workdir, latency=0.2)
    try:
        wait_for_rows(workdir, 16)
        waiting = start(workdir, "--wait")
        assert waiting.stderr is not None
        said = ""
        with selectors.DefaultSelector() as selector:  # its first words: whom it waits for
            selector.register(waiting.stderr, selectors.EVENT_READ)
            if selector.select(timeout=60):
                said = waiting.stderr.readline()
        assert f"in use by PID {first.pid}" in said, said
        assert waiting.poll() is None, "it waits"
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert_complete(workdir)


def test_after_kill_9_the_runs_record_has_its_done_and_rows_exactly(workdir):
    """Counts are saved every quarter second, not with each outcome: done, failed and rows come
    from the outcomes themselves (each done task keeps its rows), read without the run's process."""
    proc = start(workdir)
    wait_for_rows(workdir, 40)
    time.sleep(random.Random(3).uniform(0.0, 0.4))
    proc.kill()
    proc.communicate(timeout=10)
    done = len(done_ids(workdir))
    shown = subprocess.run([sys.executable, "-m", "synctask.cli", "history", "numbers", "--state",
                            ".synctask/state.db", "--json"], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    import json

    [run] = json.loads(shown.stdout)["runs"]
    assert (run["done"], run["failed"], run["rows"]) == (done, 0, done), run  # one row per task
    finish(workdir)
    assert_complete(workdir)
    [run] = json.loads(subprocess.run([sys.executable, "-m", "synctask.cli", "history", "numbers", "--state",
                                       ".synctask/state.db", "--json"], cwd=workdir, capture_output=True,
                                      text=True, timeout=60).stdout)["runs"]
    assert (run["state"], run["done"], run["rows"]) == ("completed", TASKS, TASKS), run  # the run taken up
