"""The daemon's task search and its resumable event stream, over real HTTP: failed tasks found
by their parameters after a restart, a page at a time; in-flight tasks with their parameters; a
stream resumed with Last-Event-ID never repeats a line; a plan waiting on a full limit says which."""

from __future__ import annotations

import json
import urllib.request

from .served import TOKENS, api, daemon, opened, plan, wait_until

TASKS = '''
import asyncio
from synctask import InvalidRequest, TransientError

async def fetch(symbol, day):
    await asyncio.sleep(0.01)
    if symbol == "BAD" and day % 3 == 0:
        raise InvalidRequest(f"no bars for {symbol} on day {day}")
    return [{"symbol": symbol, "day": day}]

async def slow(i):
    await asyncio.sleep(30)
    return [{"i": i}]

async def quick(i):
    return [{"i": i}]
'''

PLANS = '''
[vendors.local]
connector = "python:search_tasks:fetch"
limits = [{ rate = 200, per = "1s" }]

[vendors.held]
connector = "python:search_tasks:quick"
limits = [{ rate = 2, per = "1m" }]

[vendors.slow]
connector = "python:search_tasks:slow"
limits = [{ concurrency = 2 }]

[datasets.bars]
vendor = "local"
api = "python:search_tasks:fetch"
sink = { kind = "sqlite", path = "bars.db", key = ["symbol", "day"] }

[datasets.held]
vendor = "held"
api = "python:search_tasks:quick"

[datasets.slow]
vendor = "slow"
api = "python:search_tasks:slow"

[[plans]]
name = "bars"
dataset = "bars"
params = { symbol = ["AAA", "BAD"], day = { from = 1, to = 30 } }

[[plans]]
name = "held"
dataset = "held"
params = { i = { from = 1, to = 10 } }

[[plans]]
name = "slow"
dataset = "slow"
params = { i = { from = 1, to = 10 } }
'''


def workdir_of(tmp_path):
    (tmp_path / "search_tasks.py").write_text(TASKS)
    (tmp_path / "plans.toml").write_text(PLANS)
    return tmp_path


def tasks(url: str, query: str) -> dict:
    status, answer = api(url, path=f"/api/tasks?{query}")
    assert status == 200, answer
    return answer


def test_failed_tasks_are_found_by_parameter_text_after_a_restart_a_page_at_a_time(tmp_path):
    workdir = workdir_of(tmp_path)
    with daemon(workdir) as (_, url):
        wait_until(lambda: plan(url, "bars")["state"] == "completed")
        running = tasks(url, "state=running&plan=slow")["tasks"]
        assert len(running) == 2 and {t["params"]["i"] for t in running} <= set(range(1, 11))
        assert all(t["seconds"] >= 0 for t in running)
        waiting = plan(url, "held")["waiting"]  # 2 a minute, both sent: it says which limit and when
        assert waiting["scope"] == "vendor:held" and "2 of 2 in the last 1m" in waiting["text"]
        assert waiting["room_at"] is not None and waiting["reason"] == "limit"
        capped = plan(url, "slow")["waiting"]  # both slots taken: room when an answer comes (no time)
        assert capped["scope"] == "vendor:slow" and capped["room_at"] is None and "2 of 2 in flight" in capped["text"]
    with daemon(workdir) as (_, url):
        failed = tasks(url, "plan=bars&state=failed")
        assert not failed["more"] and len(failed["tasks"]) == 10
        assert {t["params"]["day"] for t in failed["tasks"]} == {3, 6, 9, 12, 15, 18, 21, 24, 27, 30}
        assert all("no bars for BAD" in t["message"] and t["at"].count(":") >= 2 for t in failed["tasks"])
        found = tasks(url, "plan=bars&state=failed&q=%22day%22%3A%2012")["tasks"]  # "day": 12
        assert [t["params"] for t in found] == [{"symbol": "BAD", "day": 12}]
        first, second = tasks(url, "state=done&limit=25"), tasks(url, "state=done&limit=25&offset=25")
        assert first["more"] and len(first["tasks"]) == len(second["tasks"]) == 25
        assert not {t["task_id"] for t in first["tasks"]} & {t["task_id"] for t in second["tasks"]}
        for bad in ("state=lost", "limit=0", "limit=501", "offset=-1", "plan=nope&state=failed"):
            status, answer = api(url, path=f"/api/tasks?{bad}")
            assert status in (400, 404) and answer["error"], (bad, answer)


def read_lines(url: str, last_id: int | None, until: int) -> list[dict]:
    """The stream's items (not progress) until ``until`` of them came, resuming after ``last_id``."""
    headers = {"Authorization": f"Bearer {TOKENS[url]}"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    items: list[dict] = []
    request = urllib.request.Request(url + "/api/events", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data: "):
                items += [e for e in json.loads(line[6:]) if e["type"] != "progress"]
            if len(items) >= until:
                return items
    return items


def test_a_stream_resumed_with_last_event_id_never_repeats_a_line(tmp_path):
    workdir = workdir_of(tmp_path)
    with daemon(workdir) as (_, url):
        wait_until(lambda: plan(url, "bars")["state"] == "completed")
        everything = read_lines(url, None, 1)
        ids = [item["id"] for item in everything]
        assert ids == sorted(ids) and len({item["line"] for item in everything}) == len(everything)
        seen = {item["line"]: item["id"] for item in everything}
        last = max(ids)
        for action in ("pause", "resume", "pause"):
            api(url, "POST", f"/api/plans/held/{action}")
            more = read_lines(url, last, 1)  # a reconnect: only what it has not seen
            assert more and all(item["id"] > last for item in more)
            assert not [item for item in more if seen.get(item["line"]) == item["id"]]  # nothing seen again
            seen.update({item["line"]: item["id"] for item in more})
            last = max(item["id"] for item in more)
        with opened(url, "/api/events") as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
        status, answer = api(url, path="/api/events", headers={"Last-Event-ID": "yesterday"})
        assert status == 400 and "Last-Event-ID" in answer["error"]


def test_one_failed_task_is_retried_alone_and_the_others_stay_failed(tmp_path):
    workdir = workdir_of(tmp_path)
    with daemon(workdir) as (_, url):
        wait_until(lambda: plan(url, "bars")["state"] == "completed")
        failed = tasks(url, "plan=bars&state=failed&q=day=12")["tasks"]
        assert [t["params"] for t in failed] == [{"symbol": "BAD", "day": 12}]
        status, answer = api(url, "POST", "/api/plans/slow/tasks/x/retry")
        assert status == 409 and "once its run has ended" in answer["error"]  # slow's run goes on
        status, answer = api(url, "POST", "/api/plans/bars/tasks/bars:nope/retry")
        assert status == 404 and "no failed task" in answer["error"]
    # the vendor has fixed day 12 meanwhile
    (workdir / "search_tasks.py").write_text(TASKS.replace("day % 3 == 0", "day % 3 == 0 and day != 12"))
    with daemon(workdir) as (_, url):
        status, answer = api(url, "POST", f"/api/plans/bars/tasks/{failed[0]['task_id']}/retry")
        assert status == 200 and answer["changed"], answer
        wait_until(lambda: plan(url, "bars")["state"] == "completed")
        view = plan(url, "bars")
        assert (view["total"], view["done"], view["failed"]) == (1, 1, 0)  # a run of that one task
        left = tasks(url, "plan=bars&state=failed")["tasks"]
        assert len(left) == 9 and {"symbol": "BAD", "day": 12} not in [t["params"] for t in left]
        status, runs = api(url, path="/api/plans/bars/runs")
        assert len(runs["runs"]) == 2
