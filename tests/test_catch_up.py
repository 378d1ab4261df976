"""Schedules without gaps, on a virtual clock: due times missed while nothing ran are run when the
plan starts (all, the latest, or none), a run left unfinished is finished first, and a due time
that comes while the previous run goes waits for it (overlap "queue") or is skipped ("skip")."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from synctask import MemoryStore, ParamGrid, RunRecord, parse_plan_text
from synctask.testing import run_virtual

from .test_executor import Recorder, executor_with, plan

HOUR = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def hourly(catchup=None, overlap="queue", n=2, templated=False):
    p = replace(plan("hourly", "d", n, schedule="every 1h"), catchup=catchup, overlap=overlap)
    if templated:
        p = replace(p, params=ParamGrid.from_spec({"day": "{today}", "i": {"from": 0, "to": n - 1}}))
    return p


def run_from(ex, start: float, until: float, the_plan) -> None:
    async def go():
        loop = asyncio.get_running_loop()
        ex._loop_ref, ex._epoch = loop, start - loop.time()
        ex.flush_interval = 3600.0
        ex.add_plan(the_plan, start=False)
        runner = asyncio.create_task(ex.run(until_idle=False))
        await asyncio.sleep(until - start)
        ex.shutdown()
        await runner

    run_virtual(go())


def logical_times(store):
    return [r.logical_time for r in store.runs("hourly")]


@pytest.mark.parametrize("catchup, expected", [
    ("all", ["01:00", "02:00", "03:00", "04:00", "05:00", "06:00"]),
    ("latest", ["05:00", "06:00"]),
    ("none", ["06:00"]),
])
def test_due_times_missed_while_down_are_run_oldest_first_as_catchup_says(catchup, expected):
    store = MemoryStore()
    store.start_run(RunRecord("hourly:20260101T000000Z", "hourly", "2026-01-01T00:00:00+00:00", T0, "running"))
    store.end_run("hourly:20260101T000000Z", "completed", T0 + 10)
    ex, _ = executor_with(Recorder(), {"d": []}, store=store)
    run_from(ex, T0 + 5.5 * HOUR, T0 + 6.5 * HOUR, hourly(catchup))  # down from 00:00 to 05:30
    times = logical_times(store)
    assert times[0] == "2026-01-01T00:00:00+00:00"
    assert [t[11:16] for t in times[1:]] == expected  # each with its own logical time, then on schedule
    assert all(r.state == "completed" for r in store.runs("hourly"))


def test_catchup_defaults_to_all_when_the_params_follow_the_logical_time_else_latest():
    assert hourly(templated=True).catch_up == "all"
    assert hourly().catch_up == "latest"
    assert hourly("none", templated=True).catch_up == "none"


def test_a_scheduled_run_left_unfinished_is_finished_first_skipping_its_done_tasks():
    rec = Recorder()
    store = MemoryStore()
    ex, _ = executor_with(rec, {"d": []}, store=store, workers=1)

    async def first():  # the 01:00 run, killed (no end recorded) after some of its tasks
        loop = asyncio.get_running_loop()
        ex._loop_ref, ex._epoch = loop, T0 + 0.99 * HOUR - loop.time()
        ex.flush_interval = 3600.0
        ex.add_plan(hourly(n=10), start=False)
        runner = asyncio.create_task(ex.run(until_idle=False))
        while len(rec.calls["d"]) < 4:
            await asyncio.sleep(0.001)
        ex.interrupt()
        ex.interrupt()
        await runner

    run_virtual(first())
    done_before = store.task_states("hourly").get("done", 0)
    assert 0 < done_before < 10 and store.last_run("hourly").state == "interrupted"
    rec2 = Recorder()
    ex2, _ = executor_with(rec2, {"d": []}, store=store)
    run_from(ex2, T0 + 1.5 * HOUR, T0 + 1.6 * HOUR, hourly(n=10))
    runs = store.runs("hourly")
    assert [r.logical_time[11:16] for r in runs] == ["01:00"] and runs[-1].state == "completed"
    assert len(rec2.calls["d"]) == 10 - done_before  # its done tasks were not fetched again


def test_overlapping_due_times_queue_by_default_and_each_runs_after_the_last():
    rec = Recorder(latency=1500.0)  # each run takes 1,500 s of virtual time: longer than the 1,800 s
    store = MemoryStore()
    ex, _ = executor_with(rec, {"d": []}, store=store, workers=1)
    p = replace(plan("hourly", "d", 2, schedule="every 30m"), overlap="queue")
    run_from(ex, T0 + 60, T0 + 3 * HOUR + 60, p)  # due 00:30, 01:00, 01:30, ... each run 3,000 s
    runs = store.runs("hourly")
    assert [r.logical_time[11:16] for r in runs] == ["00:30", "01:00", "01:30", "02:00"]  # 02:00 starts at 03:00
    started = [r.started_at - T0 for r in runs]
    assert started == sorted(started) and all(b - a >= 3000 for a, b in zip(started, started[1:]))


def test_overlapping_due_times_are_skipped_with_overlap_skip():
    rec = Recorder(latency=1500.0)
    store = MemoryStore()
    ex, _ = executor_with(rec, {"d": []}, store=store, workers=1)
    p = replace(plan("hourly", "d", 2, schedule="every 30m"), overlap="skip")
    run_from(ex, T0 + 60, T0 + 3 * HOUR + 60, p)
    assert [r.logical_time[11:16] for r in store.runs("hourly")] == ["00:30", "01:30", "02:30"]


def test_the_plan_file_takes_catchup_and_overlap_and_refuses_other_values():
    text = '''
[vendors.v]
connector = "python:m:f"
[datasets.d]
vendor = "v"
[[plans]]
name = "p"
dataset = "d"
schedule = "every 1h"
catchup = "latest"
overlap = "skip"
'''
    plans = parse_plan_text(text, "p.toml")
    assert plans.plans[0].catchup == "latest" and plans.plans[0].overlap == "skip"
    from synctask import PlanFileError

    with pytest.raises(PlanFileError, match="catchup"):
        parse_plan_text(text.replace('"latest"', '"some"'), "p.toml")


def _days_plan(to: str, refresh: float):
    from synctask.schedule import parse_schedule

    grid = ParamGrid.from_spec({"day": {"from": "2025-12-25", "to": to}, "sym": ["a", "b"]})
    return replace(plan("hourly", "d", 1), params=grid, schedule=parse_schedule("every 1d"), refresh=refresh)


def _day_calls(the_plan):
    from synctask import Dataset, SyncTaskExecutor, Vendor
    from synctask.sinks import MemorySink

    calls: list[tuple[str, str]] = []

    async def fetch(day, sym):
        calls.append((str(day), sym))
        return [{"day": str(day), "sym": sym}]

    ex = SyncTaskExecutor(workers=8, store=MemoryStore())
    ex.add_vendor(Vendor("v", "python"))
    ex.add_dataset(Dataset("d", "v", "d"), fetch=fetch, sink=MemorySink(["day", "sym"]))
    run_from(ex, T0 + 60, T0 + 2.5 * 24 * HOUR, the_plan)  # runs at Jan 2 and Jan 3, 00:00
    return calls


def test_a_rolling_range_fetches_only_the_new_days_and_its_refresh_window_each_run():
    calls = _day_calls(_days_plan("{today}", refresh=2 * 24 * HOUR))
    first, second = calls[:18], calls[18:]
    assert sorted(first) == sorted((f"{d}", s) for d in [*(f"2025-12-{n}" for n in range(25, 32)), "2026-01-01",
                                                         "2026-01-02"] for s in "ab")  # Dec 25 to Jan 2
    assert sorted(second) == [("2026-01-02", "a"), ("2026-01-02", "b"), ("2026-01-03", "a"), ("2026-01-03", "b")]


def test_a_range_that_does_not_roll_is_fetched_whole_each_run():
    calls = _day_calls(_days_plan("2025-12-28", refresh=0.0))
    assert len(calls) == 2 * 8 and sorted(calls[:8]) == sorted(calls[8:])  # a snapshot per run
