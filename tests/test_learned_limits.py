"""Limits learned by the engine, over real runs: a Python vendor that hides its limit (50 per
sliding second, 429 with Retry-After), learned with few refusals and kept in the state so the
next run starts at it with none; and a REST vendor whose RateLimit-Policy header states it,
adopted from its first answer."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from pathlib import Path

from synctask import RateLimited, SyncTaskExecutor, parse_plan_text
from synctask.errors import Failure, OutcomeKind
from synctask.learners import LEARNED
from synctask.simulator import Simulator, SimulatorConfig
from synctask.windows import Quota

from .test_learning import HiddenVendor

HIDDEN = {"rate": 50, "per": 1.0}
_admitted: deque[float] = deque()
REFUSED: list[float] = []


async def strict(i: int) -> list[dict[str, int]]:
    """A vendor that admits 50 in any second and says when room comes back, nothing more."""
    await asyncio.sleep(0.01)
    now = time.monotonic()
    while _admitted and _admitted[0] <= now - HIDDEN["per"]:
        _admitted.popleft()
    if len(_admitted) >= HIDDEN["rate"]:
        REFUSED.append(now)
        raise RateLimited("too many requests", retry_after=math.ceil(_admitted[0] + HIDDEN["per"] - now) or 1)
    _admitted.append(now)
    return [{"i": i}]


PLANS = """
[vendors.hidden]
connector = "python:tests.test_learned_limits:strict"
limits = "learn"

[datasets.items]
vendor = "hidden"
api = "python:tests.test_learned_limits:strict"
sink = { kind = "sqlite", path = "items.db", key = ["i"] }

[[plans]]
name = "items"
dataset = "items"
params = { i = { from = FROM, to = TO } }
"""


def hidden_rows_plans(vendor: str, last: int) -> str:
    """A plan file for the simulator's hidden profile (``URL`` to fill in): rows 1..``last`` of
    ``/v1/hidden`` from a REST vendor whose limits are learned."""
    return f'''
[vendors.{vendor}]
connector = "rest"
base_url = "URL"
limits = "learn"

[datasets.rows]
vendor = "{vendor}"
sink = {{ kind = "sqlite", path = "rows.db", key = ["i"] }}
options = {{ path = "/v1/hidden", query = {{ i = "{{i}}" }}, records = "data" }}

[[plans]]
name = "rows"
dataset = "rows"
params = {{ i = {{ from = 1, to = {last} }} }}
'''


def run_items(tmp_path, first: int, last: int):
    async def go():
        ex = SyncTaskExecutor(workers=8, state=tmp_path / "state.db", base_dir=tmp_path)
        ex.load(parse_plan_text(PLANS.replace("FROM", str(first)).replace("TO", str(last)), "plans.toml", {}))
        started = time.monotonic()
        summary = await ex.run()
        took = time.monotonic() - started
        learned = ex.store.setting(LEARNED)
        described = ex.learners.describe("vendor:hidden")
        ex.close()
        return summary, took, learned, described

    return asyncio.run(go())


def test_a_hidden_limit_is_learned_kept_and_used_from_the_first_request_of_the_next_run(tmp_path):
    REFUSED.clear()
    summary, took, learned, described = run_items(tmp_path, 1, 600)
    assert summary.plans["items"]["done"] == 600
    assert len(REFUSED) <= 10, len(REFUSED)  # the probe's one overshoot (8 in flight), then none
    assert learned["vendor:hidden"][0]["rate"] in range(45, 51) and learned["vendor:hidden"][0]["per"] == 1.0
    assert described.startswith("learned: ") and "per 1s (from answers refused" in described
    first_refusals = len(REFUSED)
    summary, took, _, _ = run_items(tmp_path, 601, 1100)  # a new process: the state's learned limit
    assert summary.plans["items"]["done"] == 500
    assert len(REFUSED) == first_refusals  # not one refusal
    assert took < 500 / 45 + 3, took  # at the limit from the start, not a probe's slow climb


def test_a_limit_stated_in_headers_is_adopted_with_no_refusal(tmp_path):
    text = '''
[vendors.items-api]
connector = "rest"
base_url = "URL"
limits = "learn"
options = { headers = { Authorization = "Bearer x" } }

[datasets.items]
vendor = "items-api"
sink = { kind = "sqlite", path = "items.db", key = ["id"] }
options = { path = "/v1/items", query = { day = "{day}", page_size = "10" }, records = "data.items", pagination = { kind = "cursor", param = "cursor", path = "meta.next_cursor" } }

[[plans]]
name = "items"
dataset = "items"
params = { day = { from = "2024-01-01", to = "2024-01-20", step = "1d" } }
'''

    async def go():
        async with Simulator(SimulatorConfig("rest", scale=60, rest_per_minute=20)) as sim:
            ex = SyncTaskExecutor(workers=8, base_dir=tmp_path)
            ex.load(parse_plan_text(text.replace("URL", sim.url), "plans.toml", {}))
            summary = await ex.run()
            return summary, sim.stats, ex.learners.describe("vendor:items-api")

    summary, stats, described = asyncio.run(go())
    assert summary.plans["items"]["failed"] == 0 and summary.plans["items"]["done"] > 20
    assert stats.violations == [], stats.violations
    assert described == "learned: 20 per 1s (from the RateLimit-Policy header)", described


def test_synctask_limits_shows_and_forgets_what_was_learned(tmp_path):
    import subprocess
    import sys

    REFUSED.clear()
    run_items(tmp_path, 1, 200)
    plans = tmp_path / "plans.toml"
    plans.write_text(PLANS.replace("FROM", "1").replace("TO", "2"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def limits(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "synctask.cli", "limits", str(plans), "--state",
                               str(tmp_path / "state.db"), *args], capture_output=True, text=True, env=env, timeout=60)

    shown = limits()
    assert shown.returncode == 0 and "vendor:hidden: learned: " in shown.stdout and "per 1s" in shown.stdout, shown
    wrong = limits("--forget", "nobody")
    assert wrong.returncode == 1 and "nothing was learned of vendor:nobody (learned: vendor:hidden)" in wrong.stderr
    gone = limits("--forget", "hidden")
    assert gone.returncode == 0 and "vendor:hidden: forgotten" in gone.stdout
    assert "nothing learned yet" in limits().stdout


def test_a_rest_vendor_that_hides_its_limit_over_real_sockets(tmp_path):
    """The simulator's hidden profile: 100 per 10 (vendor) seconds at scale 10, so 100 a real
    second; a 429 with Retry-After alone; 20 refusals in 10 s would be a ban."""
    text = hidden_rows_plans("quiet", 900)

    async def go():
        config = SimulatorConfig("hidden", scale=10, hidden_limits=((100, 10.0, False),))
        async with Simulator(config) as sim:
            ex = SyncTaskExecutor(workers=8, base_dir=tmp_path)
            ex.load(parse_plan_text(text.replace("URL", sim.url), "plans.toml", {}))
            summary = await ex.run()
            return summary, sim.stats, ex.learners.by_scope["vendor:quiet"].limits()

    summary, stats, learned = asyncio.run(go())
    assert summary.plans["rows"]["done"] == 900 and summary.plans["rows"]["failed"] == 0
    assert stats.bans == 0 and len(stats.violations) <= 10, stats.violations
    [quota] = learned
    assert quota.per == 1.0 and 90 <= quota.rate <= 100, quota


def test_every_limit_a_vendor_states_in_the_current_drafts_headers_is_adopted_with_no_refusal(tmp_path):
    """The hidden profile stating its two limits (``RateLimit-Policy: "l0";q=50;w=1, "l1";q=300;w=10``):
    both adopted from the first answer, so neither is ever exceeded (450 requests: the 10-s one binds)."""
    text = hidden_rows_plans("open", 450)

    async def go():
        config = SimulatorConfig("hidden", hidden_limits=((50, 1.0, False), (300, 10.0, False)), hidden_stated=True)
        async with Simulator(config) as sim:
            ex = SyncTaskExecutor(workers=8, base_dir=tmp_path)
            ex.load(parse_plan_text(text.replace("URL", sim.url), "plans.toml", {}))
            summary = await ex.run()
            return summary, sim.stats, ex.learners.describe("vendor:open")

    summary, stats, described = asyncio.run(go())
    assert summary.plans["rows"]["done"] == 450 and summary.plans["rows"]["failed"] == 0
    assert stats.violations == [], stats.violations
    assert described == ("learned: 50 per 1s (from the RateLimit-Policy header); "
                         "learned: 300 per 10s (from the RateLimit-Policy header)"), described


def test_tushares_own_message_states_its_limits_however_it_is_encoded():
    import json as _json

    from synctask.connectors.base import Response
    from synctask.connectors.tushare import TushareConnector
    from synctask.model import Dataset, Vendor

    connector = TushareConnector(Vendor("ts", "tushare", "http://x"), Dataset("daily", "ts", "daily"))
    for body in (_json.dumps({"code": 40203, "msg": "抱歉，您每分钟最多访问该接口200次"}).encode(),  # \\u escaped
                 _json.dumps({"code": 40203, "msg": "抱歉，您每天最多访问该接口5000次"}, ensure_ascii=False).encode()):
        [said] = connector.observations(Response(200, {}, body))
        assert (said.limit, said.per, said.used, said.source) in (
            (200, 60.0, 0, "Tushare's own message"), (5000, 86400.0, 0, "Tushare's own message"))
    assert connector.observations(Response(200, {}, b'{"code": 0, "data": {"items": []}}')) == []


class _Limits:
    """What ``Learners`` tells the scheduler and the state (the pieces it calls)."""

    def __init__(self) -> None:
        self.limits: dict[str, list] = {}
        self.saved: dict = {}

    def relimit(self, scope, limits, now, seeds, margin=None) -> None:
        self.limits[scope] = list(limits)

    def save_setting(self, key, value) -> None:
        self.saved[key] = value


def test_a_refusal_from_a_ray_node_is_explained_once_what_was_admitted_before_it_is_back():
    """Ray: tasks report when they reached the vendor (their answer's start, on the master's
    clock). A refusal waits for every task admitted before it reached the vendor to come back,
    so each counts where it reached it; meanwhile the probe grows no more."""
    from synctask.learners import Learners
    from synctask.model import SyncTask

    limits = _Limits()
    learners = Learners(limits, lambda: limits, lambda: 0.0)  # type: ignore[arg-type]
    plan = parse_plan_text(hidden_rows_plans("quiet", 10).replace("URL", "http://127.0.0.1:1"), "plans.toml", {})
    learners.add_dataset(plan.datasets["rows"], plan.vendors["quiet"])
    learner = learners.by_scope["vendor:quiet"]
    learner.probe = Quota(64, 1.0)  # (as after a few clean steps)
    vendor = HiddenVendor(12, 1.0)
    tasks = []
    for i in range(24):  # admitted 40 ms apart; odd ones reach the vendor 0.6 s later (a busy node)
        task = SyncTask("rows", {"i": i})
        task.admitted = i * 0.04
        learners.sent(task, "rows", task.admitted, 1)
        task.reached = task.admitted + (0.05 if i % 2 == 0 else 0.6)
        tasks.append(task)
    order = sorted(tasks, key=lambda t: t.reached)
    waits = [vendor.arrive(task.reached) for task in order]
    first_refused = waits.index(next(w for w in waits if w is not None))
    for n, (task, wait) in enumerate(zip(order, waits)):
        failure = None if wait is None else Failure(OutcomeKind.RATE_LIMITED, "429", status=429, retry_after=wait)
        learners.ended(task, "rows", failure, task.reached + 0.01)
        if n >= first_refused and any(t.admitted < order[first_refused].reached for t in order[n + 1:]):
            assert learner.probe == Quota(64, 1.0) and learner._held  # waiting; not grown
    assert learner.limits() == [Quota(12, 1.0)], learner.describe()
    assert limits.limits["vendor:quiet"] == [Quota(12, 1.0)] and LEARNED in limits.saved
