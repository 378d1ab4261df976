"""The executor with Python tasks, on a virtual clock: pace, control ops, outcomes, jobs, shutdown."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from synctask import (
    Concurrency,
    Dataset,
    FatalError,
    FreezeEvent,
    InvalidRequest,
    JobFailed,
    MemorySink,
    MemoryStore,
    ParamGrid,
    PlanEvent,
    PlanState,
    Quota,
    QuotaExhausted,
    RateLimited,
    RetryPolicy,
    SQLiteStore,
    SyncPlan,
    SyncTaskExecutor,
    TaskEvent,
    TransientError,
    UnknownPlan,
    Vendor,
    parse_schedule,
)
from synctask.testing import run_virtual


class Recorder:
    """A Python task that records when each call started, with a fixed latency."""

    def __init__(self, latency: float = 0.01, fail=None):
        self.calls: dict[str, list[float]] = defaultdict(list)
        self.latency = latency
        self.fail = fail
        self.running = 0
        self.max_running = 0

    def __call__(self, name):
        async def fetch(i, **_):
            loop = asyncio.get_running_loop()
            self.calls[name].append(loop.time())
            nth = len(self.calls[name])
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            try:
                await asyncio.sleep(self.latency)
                if self.fail is not None:
                    self.fail(name, i, nth)
                return [{"i": i, "plan": name}]
            finally:
                self.running -= 1
        return fetch


def plan(name, dataset, n, *, priority=0, timeout=None, retry=None, schedule="manual", on_fatal="stop_plan"):
    return SyncPlan(name, dataset, ParamGrid.from_spec({"i": {"from": 0, "to": n - 1}}), parse_schedule(schedule),
                    priority, timeout, retry or RetryPolicy(attempts=3, base=0.5, cap=1.0, jitter=False), on_fatal)


def executor_with(rec, datasets, *, workers=32, store=None, vendor_limits=()):
    ex = SyncTaskExecutor(workers=workers, store=store or MemoryStore())
    ex.add_vendor(Vendor("v", "python", limits=tuple(vendor_limits)))
    sinks = {}
    for name, limits in datasets.items():
        sinks[name] = MemorySink(["plan", "i"])
        ex.add_dataset(Dataset(name, "v", name, tuple(limits)), fetch=rec(name), sink=sinks[name])
    return ex, sinks


def relative(times):
    start = times[0]
    return [round(t - start, 3) for t in times]  # the virtual loop charges 1 µs per turn


def test_a_plan_runs_at_exactly_its_limit():
    rec = Recorder()
    ex, sinks = executor_with(rec, {"d": [Quota(10, 1.0)]})

    async def go():
        ex.add_plan(plan("p", "d", 35))
        return await ex.run()

    summary = run_virtual(go())
    # Each call holds its window from when it starts until it returns (0.01 s): the next window's
    # calls go one call's length later, since the vendor may have counted the last one that late.
    assert relative(rec.calls["d"]) == [round((i // 10) * 1.01, 3) for i in range(35)]
    assert summary.plans["p"]["done"] == 35 and summary.plans["p"]["state"] == "completed"
    assert len(sinks["d"].rows) == 35


def _pace_of_b(ops):
    """B's call times while A is disturbed by ``ops`` (a coroutine taking the executor)."""
    rec = Recorder(latency=0.5)
    ex, _ = executor_with(rec, {"a": [Quota(10, 1.0)], "b": [Quota(7, 1.0)]})

    async def go():
        ex.add_plan(plan("pa", "a", 200))
        ex.add_plan(plan("pb", "b", 70))
        runner = asyncio.create_task(ex.run())
        if ops is not None:
            await ops(ex)
        await asyncio.sleep(30)
        try:
            if ex.plan_state("pa") in (PlanState.PAUSED, PlanState.STOPPED):
                ex.cancel_plan("pa")  # a plan left paused or stopped would keep run() waiting
        except UnknownPlan:
            pass  # removed
        await runner

    run_virtual(go())
    return relative(rec.calls["b"]), rec


@pytest.mark.parametrize("name", ["pause", "stop", "cancel", "remove", "stop-start", "pause-resume"])
def test_every_control_op_leaves_other_plans_at_their_pace(name):
    async def ops(ex):
        await asyncio.sleep(3.2)  # A's fourth ten calls are in flight (from 3.0 to 3.5)
        if name in ("pause", "pause-resume"):
            ex.pause_plan("pa")
        elif name in ("stop", "stop-start"):
            stopped = ex.stop_plan("pa")
            assert stopped, "A had tasks in flight to cancel"
        elif name == "cancel":
            ex.cancel_plan("pa")
        else:
            ex.remove_plan("pa")
        await asyncio.sleep(2.0)
        if name == "pause-resume":
            ex.resume_plan("pa")
        elif name == "stop-start":
            ex.start_plan("pa")

    baseline, _ = _pace_of_b(None)
    disturbed, rec = _pace_of_b(ops)
    assert disturbed == baseline
    if name in ("stop-start", "pause-resume"):
        assert sorted(rec.calls["a"]) == rec.calls["a"]
        assert len(rec.calls["a"]) >= 200  # all of A ran; stopped tasks ran again


def test_stop_returns_in_flight_tasks_and_start_finishes_without_duplicates():
    rec = Recorder(latency=1.0)
    ex, sinks = executor_with(rec, {"d": [Quota(20, 1.0)]})
    done_events = []

    async def go():
        ex.add_plan(plan("p", "d", 40))
        runner = asyncio.create_task(ex.run())
        events = ex.events()

        async def collect():
            async for event in events:
                if isinstance(event, TaskEvent) and event.kind == "done":
                    done_events.append(event.task_id)

        collector = asyncio.create_task(collect())
        await asyncio.sleep(0.5)
        cancelled = ex.stop_plan("p")
        assert len(cancelled) == 20
        await asyncio.sleep(0.01)
        assert ex.in_flight() == 0
        ex.start_plan("p")
        await runner
        collector.cancel()

    run_virtual(go())
    assert len(sinks["d"].rows) == 40
    assert len(done_events) == len(set(done_events)) == 40


def test_outcomes_retry_freeze_fail_and_the_plan_goes_on():
    def fail(name, i, calls):
        if i == 1:
            raise InvalidRequest("bad i")
        if i == 2 and calls < 4:
            raise TransientError("503")
        if i == 3 and calls < 6:
            raise RateLimited("429", retry_after=5.0)

    rec = Recorder(fail=fail)
    ex, sinks = executor_with(rec, {"d": []})
    freezes = []

    async def go():
        ex.add_plan(plan("p", "d", 5))
        events = ex.events()

        async def collect():
            async for event in events:
                if isinstance(event, FreezeEvent):
                    freezes.append(event)

        collector = asyncio.create_task(collect())
        summary = await ex.run()
        collector.cancel()
        return summary

    summary = run_virtual(go())
    stats = summary.plans["p"]
    assert (stats["done"], stats["failed"], stats["state"]) == (4, 1, "completed")
    assert stats["retries"] >= 1 and stats["freezes"] >= 1
    assert freezes and freezes[0].scope == "dataset:d"
    assert "froze dataset:d for 5s" in freezes[0].message
    assert {r["i"] for r in sinks["d"].rows.values()} == {0, 2, 3, 4}


def test_quota_exhausted_pauses_the_dataset_until_the_reset_and_checkpoints():
    calls = []

    async def fetch(i):
        loop = asyncio.get_running_loop()
        calls.append(loop.time())
        if len(calls) == 2:
            raise QuotaExhausted("每天最多访问该接口2次", retry_after=3600.0)
        return [{"i": i}]

    store = MemoryStore()
    ex = SyncTaskExecutor(workers=1, store=store)
    ex.add_vendor(Vendor("v", "python"))
    ex.add_dataset(Dataset("d", "v", "d"), fetch=fetch, sink=MemorySink(["i"]))

    async def go():
        ex.add_plan(plan("p", "d", 3))
        return await ex.run()

    summary = run_virtual(go())
    assert summary.plans["p"]["done"] == 3
    assert calls[2] - calls[1] == pytest.approx(3600.0, abs=0.1)


def test_fatal_stops_its_plan_gracefully_while_others_finish():
    def fail(name, i, calls):
        if name == "a" and calls == 3:
            raise FatalError("token invalid")

    rec = Recorder(fail=fail)
    store = MemoryStore()
    ex, sinks = executor_with(rec, {"a": [Quota(5, 1.0)], "b": [Quota(5, 1.0)]}, store=store)

    async def go():
        ex.add_plan(plan("pa", "a", 20))
        ex.add_plan(plan("pb", "b", 20))
        return await ex.run()

    summary = run_virtual(go())
    assert summary.plans["pa"]["state"] == "failed"
    assert summary.plans["pb"]["state"] == "completed" and summary.plans["pb"]["done"] == 20
    assert store.last_run("pa").state == "failed"
    assert len(sinks["a"].rows) < 20


def test_timeouts_are_retried_then_fail_with_a_clear_message():
    async def slow(i):
        await asyncio.sleep(10)

    ex = SyncTaskExecutor(workers=4, store=MemoryStore())
    ex.add_vendor(Vendor("v", "python"))
    ex.add_dataset(Dataset("d", "v", "d"), fetch=slow)
    messages = []

    async def go():
        ex.add_plan(plan("p", "d", 1, timeout=1.0, retry=RetryPolicy(attempts=2, base=0.5, cap=0.5, jitter=False)))
        events = ex.events()

        async def collect():
            async for event in events:
                if isinstance(event, TaskEvent) and event.kind == "failed":
                    messages.append(event.message)

        collector = asyncio.create_task(collect())
        loop = asyncio.get_running_loop()
        start = loop.time()
        summary = await ex.run()
        collector.cancel()
        return summary, loop.time() - start

    summary, took = run_virtual(go())
    assert summary.plans["p"]["failed"] == 1
    assert took == pytest.approx(2.5, abs=0.01)  # 1 s, 0.5 s backoff, 1 s
    assert "no answer within 1s" in messages[0] and "gave up after 2 attempts" in messages[0]


def test_set_workers_up_and_down_while_running():
    rec = Recorder(latency=1.0)
    ex, _ = executor_with(rec, {"d": []}, workers=2)
    seen = []

    async def go():
        ex.add_plan(plan("p", "d", 60))
        runner = asyncio.create_task(ex.run())
        await asyncio.sleep(2.5)
        seen.append(rec.max_running)
        ex.set_workers(6)
        await asyncio.sleep(2.0)
        seen.append(rec.running)
        ex.set_workers(1)
        await asyncio.sleep(1.5)
        seen.append(rec.running)
        await runner

    run_virtual(go())
    assert seen == [2, 6, 1]


def test_concurrency_cap_holds_across_workers():
    rec = Recorder(latency=0.5)
    ex, _ = executor_with(rec, {"d": [Concurrency(3)]}, workers=10)

    async def go():
        ex.add_plan(plan("p", "d", 30))
        await ex.run()

    run_virtual(go())
    assert rec.max_running == 3


def test_a_job_splits_executes_and_aggregates_under_limits():
    seen = []

    async def square(x):
        seen.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.01)
        return x * x

    async def go():
        ex = SyncTaskExecutor(workers=8, store=MemoryStore())
        return await ex.submit_job(range(25), square, sum, name="squares", limits=[Quota(10, 1.0)])

    assert run_virtual(go()) == sum(x * x for x in range(25))
    assert relative(seen)[-1] == 2.02  # 25 mini-tasks at 10 per second, each window after the last answer


def test_a_job_retries_transient_failures_and_names_the_ones_that_fail():
    attempts = defaultdict(int)

    async def work(item):
        attempts[item] += 1
        if item == 2 and attempts[item] == 1:
            raise TransientError("flaky")
        if item == 4:
            raise InvalidRequest("four is not allowed")
        return item

    async def go():
        ex = SyncTaskExecutor(workers=4, store=MemoryStore())
        with pytest.raises(JobFailed) as info:
            await ex.submit_job([0, 1, 2, 3, 4], work, name="j", retry=RetryPolicy(attempts=3, base=0, cap=0))
        return info.value

    error = run_virtual(go())
    assert attempts[2] == 2
    assert list(error.failures) == ["mini-task 4 {'item': 4}"]
    assert "four is not allowed" in str(error) and "1 of 5 mini-tasks failed" in str(error)


def test_scheduled_plans_start_by_themselves_and_each_run_does_its_work():
    rec = Recorder()
    store = MemoryStore()
    ex, sinks = executor_with(rec, {"d": []}, store=store)

    async def go():
        # "every 1h" runs on the hour: start the wall clock at 00:30 so that three hours and a
        # minute hold exactly three due times, whatever the time of day the suite runs at.
        loop = asyncio.get_running_loop()
        ex._loop_ref, ex._epoch = loop, 1_767_227_400.0 - loop.time()  # 2026-01-01 00:30 UTC
        ex.add_plan(plan("hourly", "d", 3, schedule="every 1h"), start=False)
        runner = asyncio.create_task(ex.run(until_idle=False))
        await asyncio.sleep(3 * 3600 + 60)
        ex.shutdown()
        await runner

    run_virtual(go())
    runs = store.runs("hourly")
    assert len(runs) == 3 and all(r.state == "completed" for r in runs)
    assert len(rec.calls["d"]) == 9


def test_a_cron_plan_fires_at_its_time_in_its_time_zone():
    rec = Recorder()
    store = MemoryStore()
    ex, _ = executor_with(rec, {"d": []}, store=store)
    ex.flush_interval = 3600.0  # four virtual days of 0.2 s flushes would take real seconds

    async def go():
        # 18:00 in Shanghai on weekdays is 10:00 UTC; from Friday 2026-01-02 00:00 UTC over four
        # days that is Friday and Monday, not the weekend.
        loop = asyncio.get_running_loop()
        ex._loop_ref, ex._epoch = loop, 1_767_312_000.0 - loop.time()
        ex.add_plan(plan("close", "d", 2, schedule="cron 0 18 * * 1-5 Asia/Shanghai"), start=False)
        runner = asyncio.create_task(ex.run(until_idle=False))
        await asyncio.sleep(4 * 86400)
        ex.shutdown()
        await runner

    run_virtual(go())
    runs = store.runs("close")
    assert [r.logical_time for r in runs] == ["2026-01-02T18:00:00+08:00", "2026-01-05T18:00:00+08:00"]
    assert all(r.state == "completed" for r in runs) and len(rec.calls["d"]) == 4


@pytest.mark.parametrize("in_memory", [500_000, 0])  # 0: the store is asked a batch of ids at a time
def test_rerun_skips_tasks_finished_in_an_earlier_run(tmp_path, monkeypatch, in_memory):
    import synctask.runs

    monkeypatch.setattr(synctask.runs, "DONE_IN_MEMORY", in_memory)
    rec = Recorder()
    for expected_calls in (10, 10):
        store = SQLiteStore(tmp_path / "state.db")
        ex, _ = executor_with(rec, {"d": []}, store=store)

        async def go(ex=ex):
            ex.add_plan(plan("p", "d", 10))
            return await ex.run()

        summary = run_virtual(go())
        ex.close()
        assert len(rec.calls["d"]) == expected_calls
    assert summary.plans["p"]["skipped"] == 10


def test_a_restarted_process_knows_the_last_minutes_sends(tmp_path):
    # A first process uses the whole per-minute quota and stops; a second one starts right away
    # on the same state. It must wait for the first process's sends to leave the window, to
    # the instant, rather than meet the vendor's 429.
    rec = Recorder()
    epoch: list[float] = []

    async def go(plan_name: str, n: int) -> float:
        store = SQLiteStore(tmp_path / "state.db")
        ex, _ = executor_with(rec, {"d": []}, store=store, vendor_limits=[Quota(10, 60.0)])
        if epoch:
            ex._epoch = epoch[0]  # one wall clock for both "processes" on the virtual loop
        ex.add_plan(plan(plan_name, "d", n))
        await ex.run()
        epoch[:] = [ex._epoch]
        ex.close()
        return asyncio.get_running_loop().time()

    async def both():
        await go("first", 10)
        await asyncio.sleep(5.0)  # restarted five seconds later
        await go("second", 3)

    run_virtual(both())
    first, second = rec.calls["d"][:10], rec.calls["d"][10:]
    assert len(second) == 3
    # Not at 5 s, and not later than needed: a minute after the first calls returned (10 ms).
    assert round(second[0] - first[0], 3) == 60.01


def test_progress_eta_uses_the_allowed_rate_when_the_limit_binds():
    rec = Recorder()
    ex, _ = executor_with(rec, {"d": [Quota(10, 1.0)]})
    etas = []

    async def go():
        ex.add_plan(plan("p", "d", 200))
        runner = asyncio.create_task(ex.run())
        await asyncio.sleep(5.5)
        snap = ex.progress.snapshot("p", ex._now())
        etas.append((snap.done, snap.eta, snap.rate))
        await runner

    run_virtual(go())
    done, eta, rate = etas[0]
    assert done == 60
    assert eta == pytest.approx((200 - 60) / 10, rel=0.01)


def test_progress_eta_is_not_slowed_by_a_daily_quota_with_room_to_spare():
    from synctask.limits import DAY

    rec = Recorder()
    ex, _ = executor_with(rec, {"d": [Quota(10, 1.0), Quota(100_000, DAY, clock=True, tz="Asia/Shanghai")]})
    etas = []

    async def go():
        ex.add_plan(plan("p", "d", 200))
        runner = asyncio.create_task(ex.run())
        await asyncio.sleep(5.5)
        etas.append(ex.progress.snapshot("p", ex._now()).eta)
        await runner

    run_virtual(go())
    assert etas[0] == pytest.approx((200 - 60) / 10, rel=0.01)  # not 140 / (100,000 per day)


def test_control_ops_name_unknown_plans_clearly():
    ex = SyncTaskExecutor(store=MemoryStore())
    for op in (ex.start_plan, ex.pause_plan, ex.resume_plan, ex.stop_plan, ex.cancel_plan, ex.remove_plan):
        with pytest.raises(UnknownPlan, match="no plan named 'ghost'"):
            op("ghost")


def test_shutdown_leaves_no_task_running_and_no_asyncio_complaint():
    rec = Recorder(latency=100.0)
    ex, _ = executor_with(rec, {"d": []})
    ex.grace = 1.0
    complaints = []

    async def go():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: complaints.append(context))
        ex.add_plan(plan("p", "d", 50))
        runner = asyncio.create_task(ex.run())
        await asyncio.sleep(1.0)
        ex.interrupt()
        summary = await runner
        await asyncio.sleep(0)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return summary, others

    summary, others = run_virtual(go())
    assert summary.interrupted
    assert others == []
    assert complaints == []
    assert summary.plans["p"]["done"] == 0 and ex.store.last_run("p").state == "interrupted"


def test_events_report_plan_lifecycle():
    rec = Recorder()
    ex, _ = executor_with(rec, {"d": []})
    states = []

    async def go():
        events = ex.events()

        async def collect():
            async for event in events:
                if isinstance(event, PlanEvent):
                    states.append(event.state)

        collector = asyncio.create_task(collect())
        await asyncio.sleep(0)
        ex.add_plan(plan("p", "d", 3))
        await ex.run()
        await asyncio.sleep(0)
        collector.cancel()

    run_virtual(go())
    assert states == ["running", "completed"]
