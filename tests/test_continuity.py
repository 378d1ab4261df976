"""The daemon remembers: after SIGTERM or kill -9 and a restart every plan shows the state and the
counts it had, its failed tasks are listed with their parameters and can be retried, and every run
is in the plan's history (over the API, and `synctask history` from the daemon or a state file)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from .served import api, client, daemon, env_for, plan, wait_until

TASKS = '''
import asyncio
from pathlib import Path
from synctask import FatalError, InvalidRequest

async def fetch(i):
    await asyncio.sleep(0.002)
    if i % 5 == 0 and not Path("fixed").exists():
        raise InvalidRequest(f"item {i} is not there yet")
    return [{"i": i, "v": i * 10}]

async def slow(i):
    await asyncio.sleep(0.3)
    return [{"i": i}]

async def key(i):
    if i == 3 and not Path("fixed").exists():
        raise FatalError("the key was revoked: put a new one in KEY and start the plan again")
    return [{"i": i}]
'''

PLANS = '''
[vendors.local]
connector = "python:cont_tasks:fetch"
limits = [{ rate = 400, per = "1s" }]

[datasets.items]
vendor = "local"
api = "python:cont_tasks:fetch"
sink = { kind = "sqlite", path = "items.db", key = ["i"] }

[datasets.slow]
vendor = "local"
api = "python:cont_tasks:slow"
sink = { kind = "sqlite", path = "slow.db", key = ["i"] }

[datasets.slow2]
vendor = "local"
api = "python:cont_tasks:slow"
sink = { kind = "sqlite", path = "slow2.db", key = ["i"] }

[datasets.slow3]
vendor = "local"
api = "python:cont_tasks:slow"
sink = { kind = "sqlite", path = "slow3.db", key = ["i"] }

[datasets.keyed]
vendor = "local"
api = "python:cont_tasks:key"
sink = { kind = "sqlite", path = "keyed.db", key = ["i"] }

[[plans]]
name = "finished"
dataset = "items"
params = { i = { from = 1, to = 40 } }

[[plans]]
name = "held"
dataset = "slow"
params = { i = { from = 1, to = 5000 } }

[[plans]]
name = "halted"
dataset = "slow2"
params = { i = { from = 5001, to = 10000 } }

[[plans]]
name = "dropped"
dataset = "slow3"
params = { i = { from = 10001, to = 15000 } }

[[plans]]
name = "fatal"
dataset = "keyed"
params = { i = { from = 1, to = 10 } }

[[plans]]
name = "daily"
dataset = "items"
schedule = "every 1d"
params = { i = { from = 100, to = 110 } }
'''

COUNTED = ("state", "done", "failed", "skipped", "rows", "retries", "freezes", "total", "run_id", "next_due")


@pytest.fixture()
def workdir(tmp_path):
    (tmp_path / "cont_tasks.py").write_text(TASKS)
    (tmp_path / "plans.toml").write_text(PLANS)
    return tmp_path


def views(url: str) -> dict[str, dict]:
    return {name: {k: plan(url, name)[k] for k in COUNTED}
            for name in ("finished", "held", "halted", "dropped", "fatal", "daily")}


@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
def test_a_restarted_daemon_shows_every_plan_as_it_was_and_its_failures_can_be_retried(workdir, how):
    with daemon(workdir) as (proc, url):
        wait_until(lambda: plan(url, "finished")["state"] == "completed" and plan(url, "fatal")["state"] == "failed")
        wait_until(lambda: plan(url, "held")["done"] > 20 and plan(url, "halted")["done"] > 20)
        api(url, "POST", "/api/plans/held/pause")
        api(url, "POST", "/api/plans/halted/stop")
        api(url, "POST", "/api/plans/dropped/cancel")
        wait_until(lambda: all(plan(url, name)["in_flight"] == 0 for name in ("held", "halted", "dropped")))
        before = views(url)
        if how == "kill -9":
            proc.kill()
        else:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert before["finished"]["state"] == "completed" and before["finished"]["failed"] == 8
    assert (before["held"]["state"], before["halted"]["state"], before["dropped"]["state"]) == (
        "paused", "stopped", "cancelled")
    assert before["fatal"]["state"] == "failed" and before["daily"]["next_due"] is not None

    with daemon(workdir) as (_, url):
        after = views(url)
        assert after == before
        finished = plan(url, "finished")
        listed = sorted(task["params"]["i"] for task in finished["failed_tasks"])
        assert listed == [5, 10, 15, 20, 25, 30, 35, 40]  # with their parameters, from the state
        assert all("is not there yet" in task["message"] and task["attempts"] == 1 for task in finished["failed_tasks"])
        shown = client(workdir, url, "status", "finished")
        said = " ".join(shown.stdout.split())
        assert shown.returncode == 0 and "failed after 1 try: i=5: the vendor rejected the request as invalid: item 5 is not" in said, shown.stdout
        for action in ("pause", "stop", "resume"):  # it exists, and its run has ended: a sentence, never 404
            status, answer = api(url, "POST", f"/api/plans/finished/{action}")
            assert status == 409 and "completed" in answer["error"] and "start it first" in answer["error"], answer

        (workdir / "fixed").write_text("")
        assert client(workdir, url, "retry", "finished").returncode == 0
        wait_until(lambda: plan(url, "finished")["state"] == "completed")
        view = plan(url, "finished")
        assert (view["done"], view["skipped"], view["failed"], view["failed_tasks"]) == (8, 32, 0, [])
        assert api(url, "POST", "/api/plans/fatal/start")[0] == 200  # a run a fatal error stopped goes on
        wait_until(lambda: plan(url, "fatal")["state"] == "completed")
        assert plan(url, "fatal")["run_id"] == before["fatal"]["run_id"] and plan(url, "fatal")["done"] == 10

        api(url, "POST", "/api/plans/held/resume")
        wait_until(lambda: plan(url, "held")["done"] > before["held"]["done"] + 10)
        held = plan(url, "held")
        assert held["run_id"] == before["held"]["run_id"] and held["skipped"] == 0  # one run, taken up

        status, answer = api(url, "GET", "/api/plans/finished/runs")
        assert status == 200
        runs = answer["runs"]
        assert [r["state"] for r in runs] == ["completed", "completed"]  # newest first
        assert set(runs[0]) == {"run_id", "logical_time", "state", "started_at", "ended_at", "done", "failed",
                                "skipped", "rows", "retries", "freezes", "message"}
        assert (runs[1]["done"], runs[1]["failed"], runs[1]["rows"]) == (32, 8, 32)
        assert "is not there yet" in runs[1]["message"] and runs[0]["message"] is None
        assert runs[0]["started_at"][-6] in "+-" and "T" in runs[0]["logical_time"]  # ISO 8601 with an offset
        assert api(url, "GET", "/api/plans/finished/runs?limit=1")[1]["runs"] == runs[:1]
        assert api(url, "GET", "/api/plans/finished/runs?limit=zero")[0] == 400
        assert api(url, "GET", "/api/plans/nope/runs")[0] == 404
        status, answer = api(url, "GET", "/api/plans/finished/runs?limt=1")  # a typo is not ignored
        assert status == 400 and "does not take 'limt' (it takes limit)" in answer["error"], answer
        status, answer = api(url, "GET", "/api/events?tasks=bogus")
        assert status == 400 and "tasks='bogus'" in answer["error"] and "all" in answer["error"], answer
        assert api(url, "GET", "/api/plans?state=running")[0] == 400

        shown = client(workdir, url, "history", "finished")
        assert shown.returncode == 0, shown.stderr
        assert "completed" in shown.stdout and "item" in shown.stdout


def test_history_reads_a_state_that_synctask_run_wrote_and_keeps_the_newest_runs(workdir):
    (workdir / "plans.toml").write_text(PLANS.replace('name = "finished"', 'name = "finished"\nhistory = 3'))
    env = env_for(workdir)
    for _ in range(5):
        ran = subprocess.run([sys.executable, "-m", "synctask.cli", "run", "plans.toml", "--plan", "finished",
                              "--plain"], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 1 and "8 task(s) failed" in ran.stderr, ran.stderr  # items 5, 10, ... fail
    shown = subprocess.run([sys.executable, "-m", "synctask.cli", "history", "finished", "--state",
                            ".synctask/state.db", "--json"], cwd=workdir, env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    runs = json.loads(shown.stdout)["runs"]
    assert len(runs) == 3  # the plan keeps its newest 3
    assert [r["done"] for r in runs] == [0, 0, 0] and all(r["skipped"] == 32 for r in runs)
    assert all(r["state"] == "completed" and r["failed"] == 8 for r in runs)
    assert runs[0]["run_id"] > runs[1]["run_id"] > runs[2]["run_id"]  # newest first (ids carry the start)
    assert runs[0]["started_at"] >= runs[1]["started_at"] >= runs[2]["started_at"]
    table = subprocess.run([sys.executable, "-m", "synctask.cli", "history", "finished", "--state",
                            ".synctask/state.db"], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and table.stdout.count("completed") == 3, table.stdout + table.stderr
    typo = subprocess.run([sys.executable, "-m", "synctask.cli", "history", "finishd", "--state",
                           ".synctask/state.db"], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert typo.returncode == 1 and "(did you mean 'finished'?)" in typo.stderr, typo.stderr
    missing = subprocess.run([sys.executable, "-m", "synctask.cli", "history", "finished", "--state", "nope.db"],
                             cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "nope.db" in missing.stderr and "Traceback" not in missing.stderr


def test_progress_takes_up_a_run_with_its_counts_and_does_not_count_its_finished_tasks_twice():
    from synctask.events import PlanEvent, SkipEvent, TaskEvent
    from synctask.progress import Progress

    progress = Progress()
    recorded = {"done": 30, "failed": 2, "skipped": 5, "rows": 300, "retries": 4, "freezes": 1, "total": 100,
                "message": "item 7 is gone"}
    progress.recall("p", "paused", "p:r1", recorded, carried=37)
    assert progress.counts("p") == recorded
    progress.observe(PlanEvent(1.0, "p", "running", "p:r1"))  # resumed: the same run, counts kept
    progress.observe(SkipEvent(1.0, "p", 30, 100))
    progress.observe(SkipEvent(1.1, "p", 10, 100))  # the 37 finished before, then 3 skipped now
    progress.observe(TaskEvent(1.2, "p", "done", "p:x", None, 10))
    counts = progress.counts("p")
    assert (counts["done"], counts["skipped"], counts["failed"], counts["rows"]) == (31, 8, 2, 310)
    progress.observe(PlanEvent(2.0, "p", "running", "p:r2"))  # a new run starts from nothing
    assert progress.counts("p")["done"] == 0 and progress.counts("p")["message"] is None
