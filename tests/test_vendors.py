"""Connectors over real sockets against the simulator: limits, freezes, quotas, bans, faults."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from synctask import PlanState, SyncTaskExecutor, TaskEvent, parse_plan_text
from synctask.simulator import Faults, Simulator, SimulatorConfig
from synctask.simulator.data import DAILY_FIELDS, daily_row

TOKEN_ENV = {"TS_TOKEN": "demo-token"}


def tushare_plans(url: str, *, dataset_limits: str, codes: int = 2, days: int = 30, attempts: int = 5) -> str:
    code_list = ", ".join(f'"{600000 + i}.SH"' for i in range(codes))
    return f"""
[vendors.ts]
connector = "tushare"
base_url = "{url}"
token = {{ env = "TS_TOKEN" }}

[datasets.daily]
vendor = "ts"
api = "daily"
limits = [{dataset_limits}]
sink = {{ kind = "sqlite", path = "data.db", key = ["ts_code", "trade_date"] }}

[[plans]]
name = "daily"
dataset = "daily"
params = {{ ts_code = [{code_list}], trade_date = {{ from = "2024-01-01", to = "2024-01-{days:02d}", format = "%Y%m%d" }} }}
retry = {{ attempts = {attempts}, backoff = "0.05s..0.2s" }}
"""


async def run_plans(text: str, tmp_path, env=TOKEN_ENV, workers: int = 16):
    plans = parse_plan_text(text, "plans.toml", env)
    ex = SyncTaskExecutor(workers=workers, base_dir=tmp_path)
    ex.load(plans)
    messages: list[str] = []
    events = ex.events()

    async def collect():
        async for event in events:
            if isinstance(event, TaskEvent) and event.message:
                messages.append(event.message)

    collector = asyncio.create_task(collect())
    started = time.monotonic()
    summary = await ex.run()
    await asyncio.sleep(0)
    collector.cancel()
    return summary, messages, time.monotonic() - started


def sink_rows(tmp_path, table: str, columns: str):
    db = sqlite3.connect(tmp_path / "data.db")
    try:
        return db.execute(f"SELECT {columns} FROM {table} ORDER BY 1, 2").fetchall()
    finally:
        db.close()


def expected_daily(codes: int, days: int, seed: int = 7):
    return sorted(tuple(daily_row(seed, f"{600000 + i}.SH", f"202401{d:02d}"))
                  for i in range(codes) for d in range(1, days + 1))


def test_tushare_within_its_limit_gets_every_row_with_zero_violations(tmp_path):
    async def go():
        async with Simulator(SimulatorConfig("tushare", scale=60, tushare_per_minute=20)) as sim:
            result = await run_plans(tushare_plans(sim.url, dataset_limits='{ rate = 20, per = "1s" }'), tmp_path)
            return result, sim.stats

    (summary, _, took), stats = asyncio.run(go())
    assert summary.plans["daily"]["done"] == 60
    assert stats.violations == []
    assert took < 4.5  # 60 requests at 20 per second: about 2 s
    assert sink_rows(tmp_path, "daily", ", ".join(DAILY_FIELDS)) == expected_daily(2, 30)


def test_tushare_per_minute_limit_freezes_the_dataset_and_recovers(tmp_path):
    # The plan file allows 40/s; the vendor only 20 per (scaled) minute.
    async def go():
        async with Simulator(SimulatorConfig("tushare", scale=60, tushare_per_minute=20)) as sim:
            return await run_plans(tushare_plans(sim.url, dataset_limits='{ rate = 40, per = "1s" }'), tmp_path)

    summary, messages, _ = asyncio.run(go())
    assert summary.plans["daily"]["done"] == 60 and summary.plans["daily"]["freezes"] >= 1
    assert any("每分钟最多访问该接口20次" in m and "froze dataset:daily" in m for m in messages)
    assert len(sink_rows(tmp_path, "daily", "ts_code, trade_date")) == 60


def test_tushare_daily_quota_pauses_until_the_reset_and_resumes(tmp_path):
    # A vendor "day" of 4 s; the vendor allows 30 a day, the plan file thinks 50.
    scale = 86400 / 4

    async def go():
        async with Simulator(SimulatorConfig("tushare", scale=scale, tushare_per_day=30)) as sim:
            text = tushare_plans(sim.url, dataset_limits='{ rate = 50, per = "4s", window = "clock" }', days=20)
            # Start just after a vendor midnight, so the first 31 requests fall in one vendor day
            # (started late in a day, they would spread over two and never meet the quota).
            await asyncio.sleep(4.0 - time.time() % 4.0 + 0.05)
            return await run_plans(text, tmp_path)

    summary, messages, took = asyncio.run(go())
    assert summary.plans["daily"]["done"] == 40
    assert any("每天最多访问该接口30次" in m and "until its quota resets" in m for m in messages)
    assert len(sink_rows(tmp_path, "daily", "ts_code, trade_date")) == 40


def test_tushare_bad_token_is_fatal_and_names_the_variable_not_the_value(tmp_path):
    async def go():
        async with Simulator(SimulatorConfig("tushare", scale=60)) as sim:
            text = tushare_plans(sim.url, dataset_limits='{ rate = 20, per = "1s" }')
            return await run_plans(text, tmp_path, env={"TS_TOKEN": "wrong-secret-123"})

    summary, messages, _ = asyncio.run(go())
    assert summary.plans["daily"]["state"] == "failed"
    assert any("refused the token" in m and "stopped plan daily" in m for m in messages)
    assert not any("wrong-secret-123" in m for m in messages)


def test_malformed_responses_are_retried_and_quoted_then_fail_only_their_task(tmp_path):
    async def go():
        faults = Faults(malformed_rate=1.0)
        async with Simulator(SimulatorConfig("tushare", scale=60, faults=faults)) as sim:
            text = tushare_plans(sim.url, dataset_limits='{ rate = 20, per = "1s" }', codes=1, days=3, attempts=2)
            return await run_plans(text, tmp_path)

    summary, messages, _ = asyncio.run(go())
    assert summary.plans["daily"]["failed"] == 3 and summary.plans["daily"]["state"] == "completed"
    failed = [m for m in messages if "gave up" in m]
    assert failed and "malformed tushare response" in failed[0] and "near '" in failed[0]


SINKS = {
    "sqlite": '{ kind = "sqlite", path = "data.db", key = ["ts_code", "trade_date"] }',
    "duckdb": '{ kind = "duckdb", path = "data.duckdb", key = ["ts_code", "trade_date"] }',
    "parquet": '{ kind = "parquet", path = "daily", key = ["ts_code", "trade_date"], partition_by = "ts_code" }',
    "jsonl": '{ kind = "jsonl", path = "daily.jsonl", key = ["ts_code", "trade_date"] }',
}


def read_sink(kind: str, tmp_path) -> list[tuple]:
    fields = DAILY_FIELDS
    if kind == "sqlite":
        return sink_rows(tmp_path, "daily", ", ".join(fields))
    if kind == "duckdb":
        import duckdb

        with duckdb.connect(str(tmp_path / "data.duckdb")) as db:
            return sorted(db.execute(f"SELECT {', '.join(fields)} FROM daily").fetchall())
    if kind == "parquet":
        import pyarrow.parquet as pq

        rows = []
        for part in (tmp_path / "daily").iterdir():
            code = part.name.split("=", 1)[1]
            rows += [{**r, "ts_code": code} for r in pq.read_table(part).to_pylist()]
        return sorted(tuple(r[f] for f in fields) for r in rows)
    import json

    rows = [json.loads(line) for line in (tmp_path / "daily.jsonl").read_text().splitlines()]
    return sorted(tuple(r[f] for f in fields) for r in rows)


@pytest.mark.parametrize("sink", list(SINKS))
def test_with_faults_every_row_arrives_exactly_once_in_every_sink(sink, tmp_path):
    async def go():
        faults = Faults(latency_min=0.001, latency_max=0.03, error_rate=0.05, malformed_rate=0.03, drop_rate=0.03)
        async with Simulator(SimulatorConfig("tushare", scale=60, tushare_per_minute=40, faults=faults)) as sim:
            text = tushare_plans(sim.url, dataset_limits='{ rate = 40, per = "1s" }', attempts=10).replace(
                'sink = { kind = "sqlite", path = "data.db", key = ["ts_code", "trade_date"] }', f"sink = {SINKS[sink]}")
            first = await run_plans(text, tmp_path)
            await asyncio.sleep(1.05)  # a new executor knows nothing of the last (scaled) minute
            again = await run_plans(text, tmp_path)  # no state kept: every task runs a second time
            return first, again, sim.stats

    (summary, _, _), (summary2, _, _), stats = asyncio.run(go())
    assert stats.violations == []
    assert sum(stats.faults.values()) > 0
    assert summary.plans["daily"]["done"] == summary2.plans["daily"]["done"] == 60
    assert read_sink(sink, tmp_path) == expected_daily(2, 30)


def binance_plans(url: str, *, weight_limit: int, hours: int = 24, interval_limit: int = 60) -> str:
    return f"""
[vendors.binance]
connector = "binance"
base_url = "{url}"
limits = [{{ rate = {weight_limit}, per = "1s", window = "clock" }}]

[datasets.klines]
vendor = "binance"
api = "klines"
weight = 1
sink = {{ kind = "sqlite", path = "data.db", key = ["symbol", "interval", "open_time"] }}

[[plans]]
name = "klines"
dataset = "klines"
params = {{ symbol = ["BTCUSDT", "ETHUSDT"], interval = "1m", startTime = {{ from = "2024-01-01T00:00", to = "2024-01-01T{hours - 1:02d}:00", step = "1h" }}, limit = {interval_limit} }}
retry = {{ attempts = 5, backoff = "0.05s..0.2s" }}
"""


def test_binance_klines_within_the_weight_limit_have_zero_violations(tmp_path):
    async def go():
        async with Simulator(SimulatorConfig("binance", scale=60, binance_weight_per_minute=30)) as sim:
            result = await run_plans(binance_plans(sim.url, weight_limit=30), tmp_path, workers=4)
            return result, sim.stats

    (summary, _, _), stats = asyncio.run(go())
    assert stats.violations == []
    assert summary.plans["klines"]["done"] == 48
    assert len(sink_rows(tmp_path, "klines", "symbol, open_time")) == 48 * 60


def test_binance_429_freezes_the_vendor_and_used_weight_reconciles(tmp_path):
    # Another client already used most of this minute's weight: our count must follow the header.
    async def go():
        async with Simulator(SimulatorConfig("binance", scale=60, binance_weight_per_minute=30)) as sim:
            result = await run_plans(binance_plans(sim.url, weight_limit=60), tmp_path)
            return result, sim.stats

    (summary, messages, _), stats = asyncio.run(go())
    assert summary.plans["klines"]["done"] == 48
    assert any("froze vendor:binance" in m for m in messages)
    assert not any(v["kind"] == "while_banned" for v in stats.violations)


def test_binance_418_ban_is_honoured_and_said_loudly(tmp_path):
    async def go():
        async with Simulator(SimulatorConfig("binance", scale=60, binance_weight_per_minute=1000)) as sim:
            sim._banned_until = time.time() + 1.5  # the IP is banned when we start
            result = await run_plans(binance_plans(sim.url, weight_limit=1000, hours=2), tmp_path, workers=1)
            return result, sim.stats

    (summary, messages, took), stats = asyncio.run(go())
    assert summary.plans["klines"]["done"] == 4
    assert any("BANNED" in m and "froze vendor:binance" in m for m in messages)
    assert [v["kind"] for v in stats.violations] == ["while_banned"]  # the one request that found out
    assert took >= 1.5


def test_binance_invalid_symbol_fails_only_its_tasks(tmp_path):
    async def go():
        async with Simulator(SimulatorConfig("binance", scale=60, bad_codes=("ETHUSDT",))) as sim:
            return await run_plans(binance_plans(sim.url, weight_limit=1000, hours=3), tmp_path)

    summary, messages, _ = asyncio.run(go())
    stats = summary.plans["klines"]
    assert (stats["done"], stats["failed"], stats["state"]) == (3, 3, "completed")
    assert any("Invalid symbol" in m for m in messages)


def test_user_error_rules_in_the_plan_file_come_first(tmp_path):
    async def go():
        async with Simulator(SimulatorConfig("binance", scale=60, bad_codes=("ETHUSDT",))) as sim:
            text = binance_plans(sim.url, weight_limit=1000, hours=1).replace(
                'weight = 1\n', 'weight = 1\nerrors = [{ match = "Invalid symbol", on = "message", kind = "fatal" }]\n')
            return await run_plans(text, tmp_path, workers=1)

    summary, messages, _ = asyncio.run(go())
    assert summary.plans["klines"]["state"] == PlanState.FAILED.value


def test_tushare_into_postgres_twice_leaves_each_row_once(tmp_path):
    import uuid

    from .test_sinks import PG_DSN, _postgres_or_skip

    admin = _postgres_or_skip()
    table = f"synctask_daily_{uuid.uuid4().hex[:8]}"

    async def go():
        async with Simulator(SimulatorConfig("tushare", scale=60, tushare_per_minute=40)) as sim:
            text = tushare_plans(sim.url, dataset_limits='{ rate = 40, per = "1s" }', days=10).replace(
                'sink = { kind = "sqlite", path = "data.db", key = ["ts_code", "trade_date"] }',
                f'sink = {{ kind = "postgres", dsn = "{PG_DSN}", table = "{table}", key = ["ts_code", "trade_date"] }}')
            first = await run_plans(text, tmp_path)
            second = await run_plans(text, tmp_path)  # no state kept: every task runs again
            return first, second

    try:
        (first, _, _), (second, _, _) = asyncio.run(go())
        assert first.plans["daily"]["done"] == second.plans["daily"]["done"] == 20
        rows = admin.execute(f'SELECT ts_code, trade_date, close FROM "{table}" ORDER BY 1, 2').fetchall()
        assert len(rows) == 20 == len({(r[0], r[1]) for r in rows})
    finally:
        admin.execute(f'DROP TABLE IF EXISTS "{table}"')
        admin.close()


def test_stop_cancels_http_requests_mid_flight_and_start_finishes_them(tmp_path):
    async def go():
        faults = Faults(latency_min=2.0, latency_max=2.0)  # every answer takes 2 s
        async with Simulator(SimulatorConfig("tushare", scale=60, faults=faults)) as sim:
            plans = parse_plan_text(tushare_plans(sim.url, dataset_limits='{ rate = 100, per = "1s" }', days=4),
                                    "p.toml", TOKEN_ENV)
            ex = SyncTaskExecutor(workers=16, base_dir=tmp_path)
            ex.load(plans)
            runner = asyncio.create_task(ex.run())
            await asyncio.sleep(0.3)
            started = time.monotonic()
            cancelled = ex.stop_plan("daily")
            while ex.in_flight():
                await asyncio.sleep(0.005)
            took = time.monotonic() - started
            sim.config.faults = Faults()  # the vendor is fast again
            sim._dice.faults = Faults()
            ex.start_plan("daily")
            summary = await runner
            return len(cancelled), took, summary.plans["daily"]

    cancelled, took, stats = asyncio.run(go())
    assert cancelled == 8 and took < 0.5  # requests in flight were cut, not waited for
    assert stats["done"] == 8 and stats["state"] == "completed"
    assert len(sink_rows(tmp_path, "daily", "ts_code, trade_date")) == 8
