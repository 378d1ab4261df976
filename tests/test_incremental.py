"""Incremental sync: cursor sync against the simulator's records that are added and updated as
time passes (each run asks only since its cursor; every record once, the updated ones updated; a
kill between the write and the cursor's save loses nothing), and cursors read as instants."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from synctask import SQLiteStore, SyncTaskExecutor, parse_plan_text
from synctask.incremental import Cursors, Incremental, instant
from synctask.simulator import Simulator, SimulatorConfig
from synctask.simulator.data import changing_records

PLANS = """
[vendors.api]
connector = "rest"
base_url = "{url}"

[datasets.records]
vendor = "api"
sink = {{ kind = "sqlite", path = "records.db", key = ["id"] }}
options = {{ path = "/v1/records", query = {{ region = "{{region}}", page_size = "7" }}, records = "data.records", pagination = {{ kind = "cursor", param = "cursor", path = "meta.next_cursor" }}, incremental = {{ cursor = "updated_at", param = "updated_since", initial = "2023-01-01T00:00:00Z", lag = "{lag}" }} }}

[[plans]]
name = "records"
dataset = "records"
params = {{ region = ["eu", "us"] }}
"""


def stored(tmp_path: Path) -> dict[int, tuple[str, float]]:
    with sqlite3.connect(tmp_path / "records.db") as db:
        return {i: (u, v) for i, u, v in db.execute("SELECT id, updated_at, value FROM records")}


def vendor_now(sim: Simulator) -> list[dict]:
    c = sim.config
    now = c.records_start + (datetime.now(UTC).timestamp() - sim._started) * c.scale
    return changing_records(c.seed, c.records_start, now, initial=c.records_initial, every=c.records_every,
                            update_every=c.records_update_every)


async def one_run(url: str, tmp_path: Path, lag: str = "0s") -> dict:
    ex = SyncTaskExecutor(parse_plan_text(PLANS.format(url=url, lag=lag), "plans.toml", {}), workers=4,
                          state=tmp_path / "state.db", base_dir=tmp_path)
    try:
        summary = await asyncio.wait_for(ex.run(), 60)
    finally:
        ex.close()
    return summary.plans["records"]


def cursors(tmp_path: Path) -> dict[str, str]:
    store = SQLiteStore(tmp_path / "state.db")
    try:
        rows = store._all("SELECT position FROM positions WHERE task_id LIKE 'cursor:%'")
    finally:
        store.close()
    return {json.loads(p)["partition"]["region"]: json.loads(p)["cursor"] for (p,) in rows}


def test_each_run_asks_only_since_its_cursor_and_every_record_lands_once_updated(tmp_path):
    async def go():
        async with Simulator(SimulatorConfig("rest", rest_per_minute=100_000)) as sim:
            first = await one_run(sim.url, tmp_path)
            after_first = cursors(tmp_path)
            sim.advance(30 * 60)  # half an hour of the vendor's time: 30 new records, some updated
            asked_before = len(sim.stats.asked_since)
            second = await one_run(sim.url, tmp_path)
            return sim, first, second, after_first, sim.stats.asked_since[asked_before:], vendor_now(sim)

    sim, first, second, after_first, asked, vendor = asyncio.run(go())
    assert first["failed"] == second["failed"] == 0
    assert sorted(a["region"] for a in asked) == ["eu", "us"]
    for question in asked:  # since the highest updated_at written of that region (lag 0)
        assert instant(question["updated_since"]) == instant(after_first[question["region"]])
    by_region = {r: max(x["updated_at"] for x in vendor if x["region"] == r) for r in ("eu", "us")}
    assert {r: instant(c) for r, c in cursors(tmp_path).items()} == {r: instant(c) for r, c in by_region.items()}
    assert stored(tmp_path) == {r["id"]: (r["updated_at"], r["value"]) for r in vendor}  # every record, latest
    changed = [r for r in vendor if instant(r["updated_at"]) >= instant(after_first[r["region"]])]
    assert second["rows"] == len(changed) < len(vendor)  # only what changed since (boundary rows included)
    assert first["rows"] == 40


def test_a_kill_between_the_write_and_the_cursors_save_fetches_those_rows_again(tmp_path, monkeypatch):
    async def go():
        async with Simulator(SimulatorConfig("rest", rest_per_minute=100_000)) as sim:
            await one_run(sim.url, tmp_path, lag="1m")
            saved = cursors(tmp_path)
            sim.advance(20 * 60)
            with monkeypatch.context() as patched:  # the rows reach the sink; the cursor's save never comes
                patched.setattr(Cursors, "_move", lambda self, page, last_page: None)
                await one_run(sim.url, tmp_path, lag="1m")
            assert cursors(tmp_path) == saved
            asked_before = len(sim.stats.asked_since)
            await one_run(sim.url, tmp_path, lag="1m")
            return saved, sim.stats.asked_since[asked_before:], vendor_now(sim)

    saved, asked, vendor = asyncio.run(go())
    for question in asked:  # from the old cursor again (minus the lag): nothing was skipped
        assert instant(question["updated_since"]) == instant(saved[question["region"]]) - _minutes(1)
    assert stored(tmp_path) == {r["id"]: (r["updated_at"], r["value"]) for r in vendor}


def _minutes(n: int):
    from datetime import timedelta

    return timedelta(minutes=n)


@pytest.mark.parametrize("value, expected", [
    ("2024-03-01T08:00:00Z", datetime(2024, 3, 1, 8, tzinfo=UTC)),
    ("2024-03-01T16:00:00+08:00", datetime(2024, 3, 1, 8, tzinfo=UTC)),
    ("2024-03-01T08:00:00", datetime(2024, 3, 1, 8, tzinfo=UTC)),  # naive: the option's tz (UTC)
    (1709280000, datetime(2024, 3, 1, 8, tzinfo=UTC)),  # epoch seconds
    (1709280000000, datetime(2024, 3, 1, 8, tzinfo=UTC)),  # epoch milliseconds
])
def test_cursor_values_compare_as_instants(value, expected):
    assert instant(value) == expected


def test_a_naive_cursor_takes_the_options_time_zone_and_the_parameter_is_sent_in_utc():
    spec = Incremental.of({"incremental": {"cursor": "t", "param": "since", "initial": "2024-01-01T08:00:00",
                                           "tz": "Asia/Shanghai", "lag": "5m"}})
    assert spec is not None and spec.initial == datetime(2024, 1, 1, 0, tzinfo=UTC)
    assert spec.since(None) == "2024-01-01T00:00:00Z"
    assert spec.since(instant("2024-01-02T10:00:00", spec.tz)) == "2024-01-02T01:55:00Z"


def test_a_broken_incremental_option_is_a_problem_naming_the_place():
    from synctask import PlanFileError

    broken = PLANS.format(url="http://127.0.0.1:9", lag="soon")
    with pytest.raises(PlanFileError) as info:
        parse_plan_text(broken, "plans.toml", {})
    assert "datasets.records.options.incremental.lag" in str(info.value)
