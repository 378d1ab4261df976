"""The generic REST connector: templates, every pagination kind, rate-limit headers."""

from __future__ import annotations

import asyncio
import json

import pytest

from synctask import PlanFileError, parse_plan_text
from synctask.connectors.base import Response
from synctask.connectors.rest import rate_limit_observations
from synctask.simulator import Simulator, SimulatorConfig

from .test_vendors import run_plans

PAGINATION = {
    "page": '{ kind = "page", param = "page", start = 1, size = 10 }',
    "offset": '{ kind = "offset", param = "offset", size = 10 }',
    "cursor": '{ kind = "cursor", param = "cursor", path = "meta.next_cursor" }',
    "link": '{ kind = "link" }',
}


def rest_plans(url: str, pagination: str, *, days: int = 3, limits: str = "") -> str:
    return f"""
[vendors.api]
connector = "rest"
base_url = "{url}"
token = {{ env = "API_TOKEN" }}
limits = [{limits}]
options = {{ headers = {{ Authorization = "Bearer {{token}}" }} }}

[datasets.items]
vendor = "api"
sink = {{ kind = "jsonl", path = "items.jsonl", key = ["id"] }}
options = {{ path = "/v1/items", query = {{ day = "{{day}}", page_size = "10" }}, records = "data.items", pagination = {pagination} }}

[[plans]]
name = "items"
dataset = "items"
params = {{ day = {{ from = "2024-01-01", to = "2024-01-{days:02d}" }} }}
retry = {{ attempts = 4, backoff = "0.05s..0.2s" }}
"""


@pytest.fixture
def every_answer_streamed(monkeypatch):
    """Every answer takes the large-answer path (records parsed as a stream, batch by batch)."""
    import synctask.connectors.rest
    import synctask.fetchers.http

    monkeypatch.setattr(synctask.connectors.rest, "STREAM_ABOVE", 0)
    monkeypatch.setattr(synctask.fetchers.http, "STREAM_ABOVE", 0)


@pytest.mark.parametrize("kind", list(PAGINATION))
def test_a_large_answer_is_streamed_and_paginates_the_same(kind, tmp_path, every_answer_streamed):
    test_every_pagination_kind_fetches_every_page_once(kind, tmp_path)


@pytest.mark.parametrize("records", ["rows", "data"])
def test_a_large_answer_that_does_not_fit_the_plan_stops_it_the_same(records, tmp_path, every_answer_streamed):
    async def go():
        async with Simulator(SimulatorConfig("rest", scale=60, rest_items_per_day=35)) as sim:
            text = rest_plans(sim.url, PAGINATION["cursor"], days=5).replace('records = "data.items"',
                                                                             f'records = "{records}"')
            return await run_plans(text, tmp_path, env={"API_TOKEN": "t0k"}, workers=2)

    summary, messages, _ = asyncio.run(go())
    assert summary.plans["items"]["state"] == "failed"
    expected = "has nothing there" if records == "rows" else "a row is missing key column 'id'"
    assert any(expected in m for m in messages), messages


def test_a_row_stream_counts_checks_and_batches_its_records():
    from synctask import TransientError
    from synctask.connectors.streamed import RowStream

    body = json.dumps({"data": {"items": [{"id": i, "x": i / 2} for i in range(25)]}}).encode()
    rows = RowStream(body, "data.items")
    assert len(rows) == 25 and [len(b) for b in rows.batches(10)] == [10, 10, 5]
    assert list(rows)[3] == {"id": 3, "x": 1.5}
    import pickle

    assert len(pickle.loads(pickle.dumps(rows))) == 25  # it travels back from a Ray node
    with pytest.raises(TransientError, match="record 1 at 'data.items' is int"):
        RowStream(b'{"data": {"items": [{"id": 1}, 2]}}', "data.items")
    with pytest.raises(TransientError, match="malformed REST response"):
        RowStream(b'{"data": {"items": [{"id": 1}, {"id"', "data.items")


@pytest.mark.parametrize("kind", list(PAGINATION))
def test_every_pagination_kind_fetches_every_page_once(kind, tmp_path):
    async def go():
        async with Simulator(SimulatorConfig("rest", scale=60, rest_items_per_day=35)) as sim:
            result = await run_plans(rest_plans(sim.url, PAGINATION[kind]), tmp_path, env={"API_TOKEN": "t0k"})
            return result, sim.stats

    (summary, _, _), stats = asyncio.run(go())
    rows = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 35 == len({r["id"] for r in rows})
    assert summary.plans["items"]["done"] == 3 * 4  # 4 pages a day: 10, 10, 10, 5
    assert stats.served == 12 and stats.violations == []


def test_ratelimit_headers_keep_the_client_under_a_limit_it_was_not_told(tmp_path):
    # The plan file sets no limit; the vendor allows 5 per (scaled) minute and says so in headers.
    async def go():
        async with Simulator(SimulatorConfig("rest", scale=60, rest_per_minute=5, rest_items_per_day=35)) as sim:
            result = await run_plans(rest_plans(sim.url, PAGINATION["page"], days=2), tmp_path,
                                     env={"API_TOKEN": "t0k"}, workers=1)
            return result, sim.stats

    (summary, _, _), stats = asyncio.run(go())
    assert summary.plans["items"]["done"] == 8
    assert stats.violations == []  # "remaining=0" froze the vendor until the reset, before any 429


def test_a_configured_limit_that_matches_the_headers_is_not_frozen_for_a_whole_second_reset(tmp_path):
    # The vendor allows 10 per sliding (scaled) minute = 1 s and says "remaining=0, reset=1" each
    # time the window fills. Our own 10-per-1s quota, raised to the vendor's count, already waits
    # exactly until a slot frees; a 1 s freeze on top would nearly halve the pace.
    config = SimulatorConfig("rest", scale=60, rest_per_minute=10, rest_sliding=True, rest_items_per_day=35)

    async def go():
        async with Simulator(config) as sim:
            text = rest_plans(sim.url, PAGINATION["cursor"], days=8, limits='{ rate = 10, per = "1s" }')
            result = await run_plans(text, tmp_path, env={"API_TOKEN": "t0k"}, workers=4)
            return result, sim.stats

    (summary, _, _), stats = asyncio.run(go())
    assert summary.plans["items"]["done"] == 8 * 4
    assert summary.plans["items"]["freezes"] == 0
    assert stats.violations == []


def test_rate_limit_header_forms():
    ietf = Response(200, {"RateLimit-Policy": "100;w=60", "RateLimit": "limit=100, remaining=0, reset=12"}, b"")
    (obs,) = rate_limit_observations(ietf)
    assert (obs.used, obs.per, obs.freeze_for) == (100, 60.0, 12.0)
    github = Response(200, {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59",
                            "X-RateLimit-Reset": "1700000000"}, b"")
    (obs,) = rate_limit_observations(github)
    assert (obs.used, obs.freeze_for) == (1, None)
    assert rate_limit_observations(Response(200, {}, b"")) == []


@pytest.mark.parametrize(("headers", "expected"), [
    # early IETF draft: policy and combined count
    ({"RateLimit-Policy": "100;w=60", "RateLimit": "limit=100, remaining=40, reset=12"},
     [(60, 60.0, None, 100)]),
    # several policies; the count speaks of the one whose quota is its limit
    ({"RateLimit-Policy": "10;w=1, 1000;w=3600;comment=\"hourly\"", "RateLimit-Limit": "1000",
      "RateLimit-Remaining": "0", "RateLimit-Reset": "30"},
     [(0, 1.0, None, 10), (1000, 3600.0, 30.0, 1000)]),
    # quota policies inside RateLimit-Limit (draft -03)
    ({"RateLimit-Limit": "50, 50;w=1, 600;w=60", "RateLimit-Remaining": "45", "RateLimit-Reset": "1"},
     [(5, 1.0, None, 50), (0, 60.0, None, 600)]),
    # current draft: named policies, the count names its policy
    ({"RateLimit-Policy": '"burst";q=100;w=60, "day";q=1000;w=86400', "RateLimit": '"day";r=0;t=7200'},
     [(0, 60.0, None, 100), (1000, 86400.0, 7200.0, 1000)]),
    ({"ratelimit-policy": ' "default" ; q=50 ; w=1 ', "ratelimit": '"default";r=10;t=1'},
     [(40, 1.0, None, 50)]),
])
def test_rate_limit_headers_state_every_quota_in_every_draft_form(headers, expected):
    found = rate_limit_observations(Response(200, headers, b""))
    assert [(o.used, o.per, o.freeze_for, o.limit) for o in found] == expected
    assert all(o.source and o.source.endswith("header") for o in found)


@pytest.mark.parametrize("headers", [
    {"RateLimit-Policy": "fast"}, {"RateLimit-Policy": "100;w=abc"}, {"RateLimit-Policy": "0;w=1"},
    {"RateLimit-Policy": '"x";w=1'}, {"RateLimit": '"x";r=zz'}, {"RateLimit-Limit": ";;;"},
    {"RateLimit-Policy": "100;w=1e99"}, {"X-RateLimit-Remaining": "-3"},
])
def test_malformed_rate_limit_headers_state_nothing_and_never_raise(headers):
    assert [o for o in rate_limit_observations(Response(200, headers, b"")) if o.limit is not None] == []


def test_the_token_goes_in_the_header_and_never_into_rows_or_messages(tmp_path):
    async def go():
        async with Simulator(SimulatorConfig("rest", scale=60, rest_items_per_day=5)) as sim:
            return await run_plans(rest_plans(sim.url, PAGINATION["page"], days=1), tmp_path,
                                   env={"API_TOKEN": "super-secret-token"})

    summary, messages, _ = asyncio.run(go())
    assert summary.plans["items"]["done"] >= 1
    assert "super-secret-token" not in (tmp_path / "items.jsonl").read_text() + "".join(messages)
    # A template naming a parameter the plan lacks is a plan error, at check time, without the token.
    typo = rest_plans("http://x", PAGINATION["page"], days=1).replace('day = "{day}"', 'day = "{dya}"')
    with pytest.raises(PlanFileError) as caught:
        parse_plan_text(typo, "p.toml", {"API_TOKEN": "super-secret-token"})
    assert "plans[0] (items).params: dataset 'items' fills {dya} in its request" in str(caught.value)
    assert "super-secret-token" not in str(caught.value)
    plans = parse_plan_text(rest_plans("http://x", PAGINATION["page"]), "p.toml", {"API_TOKEN": "super-secret-token"})
    assert "super-secret-token" not in repr(plans)


@pytest.mark.parametrize("in_memory", [500_000, 0])  # 0: the store is asked a batch of ids at a time
def test_an_interrupted_paginated_run_resumes_at_the_page_it_reached(tmp_path, monkeypatch, in_memory):
    import synctask.runs
    from synctask import SyncTaskExecutor

    monkeypatch.setattr(synctask.runs, "DONE_IN_MEMORY", in_memory)

    async def one_run(sim, stop_after=None):
        # 8 requests per second: the first run cannot finish its 12 pages before it is stopped.
        text = rest_plans(sim.url, PAGINATION["cursor"], limits='{ rate = 8, per = "1s" }')
        plans = parse_plan_text(text, "p.toml", {"API_TOKEN": "t"})
        ex = SyncTaskExecutor(workers=1, state=tmp_path / "state.db", base_dir=tmp_path)
        ex.load(plans)
        runner = asyncio.create_task(ex.run())
        if stop_after is not None:
            while ex.progress.plans["items"].done < stop_after:
                await asyncio.sleep(0.005)
            ex.shutdown()
        summary = await runner
        ex.close()
        return {**summary.plans["items"], "shown_total": ex.progress.plans["items"].total}

    async def go():
        async with Simulator(SimulatorConfig("rest", scale=60, rest_items_per_day=35)) as sim:
            first = await one_run(sim, stop_after=6)  # day 1 done, day 2 on its second page
            second = await one_run(sim)
            third = await one_run(sim)  # everything done: every page skipped, and counted in the total
            assert (third["skipped"], third["total"], third["shown_total"]) == (12, 12, 12), third
            return first, second, sim.stats.served

    first, second, served = asyncio.run(go())
    assert first["state"] == "interrupted" and 6 <= first["done"] < 12
    assert second["state"] == "completed"
    assert first["done"] + second["done"] == 12 == served  # no page fetched twice, none missed
    rows = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 105 == len({r["id"] for r in rows})


@pytest.mark.parametrize("records, expected", [
    ("rows", "expected a list of records at 'rows', but at the top the answer has data, meta and no 'rows'; "
             "fix datasets.items.options.records"),
    ("data", "a row is missing key column 'id' (its columns: items); nothing was written"),
])
def test_a_records_path_or_key_that_does_not_fit_the_answer_stops_the_plan_at_once(tmp_path, records, expected):
    async def go():
        async with Simulator(SimulatorConfig("rest", scale=60, rest_items_per_day=35)) as sim:
            text = rest_plans(sim.url, PAGINATION["cursor"], days=20).replace('records = "data.items"',
                                                                              f'records = "{records}"')
            return await run_plans(text, tmp_path, env={"API_TOKEN": "t0k"}, workers=4), sim.stats

    (summary, messages, _), stats = asyncio.run(go())
    assert summary.plans["items"]["state"] == "failed"
    assert stats.served <= 4 + 1, "stopped at the first answers, not after retrying every task"
    assert any(expected in m and "the vendor's answer does not fit the plan file" in m
               and "fix the plan file" in m for m in messages), messages
    assert not (tmp_path / "items.jsonl").exists() or (tmp_path / "items.jsonl").read_text() == ""


def test_a_cursor_path_the_answer_lacks_is_said_once_naming_the_key(tmp_path):
    async def go():
        async with Simulator(SimulatorConfig("rest", scale=60, rest_items_per_day=35)) as sim:
            text = rest_plans(sim.url, '{ kind = "cursor", param = "cursor", path = "meta.next" }', days=3)
            from synctask import PlanEvent, SyncTaskExecutor

            ex = SyncTaskExecutor(workers=2, base_dir=tmp_path)
            ex.load(parse_plan_text(text, "p.toml", {"API_TOKEN": "t"}))
            notices: list[str] = []
            ex.listen(lambda e: notices.append(e.message) if isinstance(e, PlanEvent) and e.message else None)
            summary = await ex.run()
            return summary.plans["items"], notices

    stats, notices = asyncio.run(go())
    assert stats["done"] == 3  # one page a day: the cursor was never found
    assert len(notices) == 1, notices
    assert "the answer has no 'meta.next' for the next page's cursor (there: next_cursor)" in notices[0]
    assert "fix datasets.items.options.pagination.path" in notices[0]
