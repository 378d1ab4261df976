"""The daemon's Prometheus metrics against a real vendor (the simulator): every answer counted
once by its outcome, rate-limited and banned ones included; short bounded labels; no
``_created`` series; the vendor named on dataset scopes; no node label off Ray."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

from synctask import SyncTaskExecutor, parse_plan_text
from synctask.server.metrics import Metrics
from synctask.simulator import Simulator, SimulatorConfig

from .test_learned_limits import hidden_rows_plans
from .test_vendors import binance_plans


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_answer_is_counted_once_by_outcome_including_rate_limited_and_banned(tmp_path):
    # The vendor allows less weight a minute than we believe 60 a second (another client, or a
    # wrong plan): it answers 429, and the IP is banned (418) when we start.
    text = binance_plans("URL", weight_limit=60).replace(
        'weight = 1\n', 'weight = 1\nlimits = [{ rate = 500, per = "1m" }, { concurrency = 3 }]\n')

    async def go():
        # 10 a vendor minute (10 a second at scale 60) where we believe 60 a second: 48 tasks cannot
        # go without a 429, however slow the machine
        async with Simulator(SimulatorConfig("binance", scale=60, binance_weight_per_minute=10)) as sim:
            sim._banned_until = time.time() + 1.0
            ex = SyncTaskExecutor(workers=4, base_dir=tmp_path)
            ex.load(parse_plan_text(text.replace("URL", sim.url), "plans.toml", {}))
            metrics = Metrics(ex)
            summary = await ex.run()
            return summary, sim.stats, metrics.exposition().decode()

    summary, stats, exposition = asyncio.run(go())
    samples = samples_of(exposition)

    def answers(outcome: str) -> float:
        return samples.get(("synctask_requests_total", (("dataset", "klines"), ("outcome", outcome),
                                                        ("vendor", "binance"))), 0.0)

    assert answers("ok") == summary.plans["klines"]["done"] == 48
    assert answers("banned") >= 1 and answers("rate_limited") >= 1
    counted = sum(v for (name, _), v in samples.items() if name == "synctask_requests_total")
    assert counted == stats.served  # every request the vendor saw, counted once
    assert samples[("synctask_tasks_total", (("outcome", "done"), ("plan", "klines")))] == 48
    assert not any(name == "synctask_tasks_total" and ("outcome", "retry") in labels for name, labels in samples)
    assert "_created" not in exposition
    assert samples[("synctask_limit_capacity", (("scope", "dataset:klines"), ("vendor", "binance"),
                                                ("window", "1m")))] == 500
    assert samples[("synctask_limit_capacity", (("scope", "vendor:binance"), ("vendor", "binance"),
                                                ("window", "1s-clock")))] == 60
    assert samples[("synctask_concurrency_capacity", (("scope", "dataset:klines"), ("vendor", "binance")))] == 3
    assert samples[("synctask_request_duration_seconds_count", (("vendor", "binance"),))] == counted
    assert not any(k == "node" for _, labels in samples for k, _ in labels)  # only on Ray
    assert all(len(v) <= 20 for _, labels in samples for k, v in labels if k == "window")


def test_request_duration_counts_http_requests_only(tmp_path):
    text = '''
[vendors.local]
connector = "python:tests.test_metrics:echo"
[datasets.calls]
vendor = "local"
api = "python:tests.test_metrics:echo"
[[plans]]
name = "calls"
dataset = "calls"
params = { n = { from = 1, to = 5 } }
'''

    async def go():
        ex = SyncTaskExecutor(workers=2, base_dir=tmp_path)
        ex.load(parse_plan_text(text, "plans.toml", {}))
        metrics = Metrics(ex)
        await ex.run()
        return metrics.exposition().decode()

    samples = samples_of(asyncio.run(go()))
    assert samples[("synctask_requests_total", (("dataset", "calls"), ("outcome", "ok"), ("vendor", "local")))] == 5
    assert samples.get(("synctask_request_duration_seconds_count", (("vendor", "local"),)), 0) == 0


async def echo(n: int) -> list[dict[str, int]]:
    return [{"n": n}]




def test_learned_limits_are_exposed_with_how_and_when(tmp_path):
    """The simulator's hidden profile stating one limit in headers: /metrics says it was stated,
    when, and its rate."""
    text = hidden_rows_plans("open", 5)

    async def go():
        async with Simulator(SimulatorConfig("hidden", hidden_limits=((30, 10.0, False),), hidden_stated=True)) as sim:
            ex = SyncTaskExecutor(workers=2, base_dir=tmp_path)
            ex.load(parse_plan_text(text.replace("URL", sim.url), "plans.toml", {}))
            metrics = Metrics(ex)
            before = samples_of(metrics.exposition().decode())
            started = time.time()
            await ex.run()
            return before, samples_of(metrics.exposition().decode()), started

    before, after, started = asyncio.run(go())
    probing = ("synctask_limit_learned", (("how", "probing"), ("scope", "vendor:open"), ("vendor", "open"),
                                          ("window", "1s")))
    assert before[probing] == 2.0  # nothing known yet: probing from 2 a second
    stated = ("synctask_limit_learned", (("how", "stated"), ("scope", "vendor:open"), ("vendor", "open"),
                                         ("window", "10s")))
    assert after[stated] == 30.0 and probing not in after
    at = after[("synctask_limit_learned_timestamp_seconds", (("scope", "vendor:open"), ("vendor", "open"),
                                                            ("window", "10s")))]
    assert started <= at <= time.time()
