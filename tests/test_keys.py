"""Several keys per vendor: every limit counts per key; a task takes its key at admission (the one
with the most room, or the first with room); a key the vendor refuses is set aside and named,
the others finish the work; keys are named by their variable everywhere, never by their value."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from synctask import (
    Dataset,
    FatalError,
    Key,
    KeyEvent,
    Limiter,
    PlanFileError,
    Quota,
    RateLimited,
    Scheduler,
    Secret,
    SyncTaskExecutor,
    Vendor,
    parse_plan_text,
)
from synctask.permits import PermitRefused
from synctask.server.metrics import Metrics
from synctask.server.views import scopes_view
from synctask.simulator import Simulator, SimulatorConfig

from .conftest import make_plan, run_until_idle

VALUES = {"KEY_A": "value-of-key-a-1234567", "KEY_B": "value-of-key-b-7654321"}


def keyed_vendor(order: str = "spread", b_limits=()) -> Vendor:
    keys = (Key("KEY_A", Secret(VALUES["KEY_A"])), Key("KEY_B", Secret(VALUES["KEY_B"]), None, tuple(b_limits)))
    return Vendor("v", "rest", limits=(Quota(10, 1.0),), keys=keys, key_order=order)


def keyed_scheduler(vendor: Vendor, dataset_limits=()) -> Scheduler:
    sched = Scheduler(Limiter())
    sched.add_dataset(Dataset("d", "v", "d", tuple(dataset_limits)), vendor)
    return sched


def test_each_key_has_the_vendors_per_key_limits_and_spread_uses_both_every_second():
    sched = keyed_scheduler(keyed_vendor())
    sched.add_plan(make_plan("p", "d", 45))
    sent, end = run_until_idle(sched)
    per_second = Counter((t, task.key) for t, task in sent)
    assert per_second == {(0.0, "KEY_A"): 10, (0.0, "KEY_B"): 10, (1.0, "KEY_A"): 10, (1.0, "KEY_B"): 10,
                          (2.0, "KEY_A"): 3, (2.0, "KEY_B"): 2}
    assert end == 2.0  # 45 at 10/s would take until 4.0 on one key


def test_fill_first_drains_the_first_key_before_the_next_and_a_keys_own_limit_replaces_the_vendors():
    sched = keyed_scheduler(keyed_vendor("fill-first", b_limits=(Quota(4, 1.0),)))
    sched.add_plan(make_plan("p", "d", 20))
    sent, _ = run_until_idle(sched)
    assert [task.key for t, task in sent if t == 0.0] == ["KEY_A"] * 10 + ["KEY_B"] * 4
    assert Counter(task.key for t, task in sent if t == 1.0) == {"KEY_A": 6}


def test_an_account_limit_is_shared_by_its_keys_and_a_dataset_limit_counts_per_key():
    keys = tuple(Key(name, Secret(value), "team") for name, value in VALUES.items())
    vendor = Vendor("v", "rest", limits=(Quota(10, 1.0),), keys=keys, accounts={"team": (Quota(12, 1.0),)})
    sched = keyed_scheduler(vendor, dataset_limits=(Quota(5, 1.0),))
    sched.add_plan(make_plan("p", "d", 24))
    sent, _ = run_until_idle(sched)
    # 5 a second per key (the dataset's limit, per key), 12 a second for both (their account)
    assert Counter(t for t, _ in sent) == {0.0: 10, 1.0: 10, 2.0: 4}
    sched = keyed_scheduler(vendor)
    sched.add_plan(make_plan("q", "d", 24))
    sent, _ = run_until_idle(sched)
    assert Counter(t for t, _ in sent) == {0.0: 12, 1.0: 12}


def test_a_429_freezes_only_its_keys_scope_and_a_refused_key_is_set_aside_while_the_other_goes_on():
    sched = keyed_scheduler(keyed_vendor())
    sched.add_plan(make_plan("p", "d", 30))

    def outcome(task, now):
        if now == 0.0 and task.key == "KEY_A" and task.params["i"] == 0:
            return RateLimited("slow down", retry_after=5.0, scope="vendor").to_failure()
        if now >= 1.0 and task.key == "KEY_B":
            return FatalError("invalid API key", status=401, scope="key").to_failure()
        return None

    sent, _ = run_until_idle(sched, outcome=outcome)
    assert sched.limiter.frozen_until("key:KEY_A:vendor:v", 0.0) == 5.0
    assert sched.limiter.frozen_until("vendor:v", 0.0) is None  # the other key was not frozen
    assert sched.keys_refused("v") == {"KEY_B"}
    stats = sched.stats("p")
    assert stats.done == 30 and stats.failed == 0
    assert {task.key for t, task in sent if t > 1.0} == {"KEY_A"}


def test_the_last_key_refused_stops_the_plan_as_a_fatal_error_and_says_every_key_was_refused():
    sched = keyed_scheduler(keyed_vendor())
    sched.add_plan(make_plan("p", "d", 10))
    messages = []

    def outcome(task, now):
        return FatalError("invalid API key", status=403).to_failure()

    decision = sched.dispatch(0.0, 100)
    for task in decision.tasks:
        verdict = sched.report(task, outcome(task, 0.0), 0.0)
        messages.append(verdict.message)
    assert sched.plan_state("p").value == "failed"
    assert sched.keys_refused("v") == {"KEY_A"} or sched.keys_refused("v") == {"KEY_B"}
    assert any("every key of vendor v was refused" in m for m in messages)
    assert any("set key KEY_" in m and "aside" in m for m in messages)


PLANS = '''
[vendors.api]
connector = "rest"
base_url = "URL"
token = [{ env = "KEY_A" }, { env = "KEY_B" }]
limits = [{ rate = 50, per = "1s" }]

[datasets.rows]
vendor = "api"
sink = { kind = "memory" }
options = { path = "/v1/hidden", query = { i = "{i}" }, headers = { Authorization = "Bearer {token}" }, records = "data" }

[[plans]]
name = "rows"
dataset = "rows"
params = { i = { from = 1, to = LAST } }
'''


def run_two_keys(last: int, revoke_after: int | None = None):
    """Rows 1..``last`` from a vendor that allows 50 a second per key, with two keys; the second
    key revoked once ``revoke_after`` tasks are done."""
    async def go():
        config = SimulatorConfig(profile="hidden", hidden_limits=((50, 1.0, False),), hidden_per_key=True)
        async with Simulator(config) as sim, aiohttp.ClientSession() as http:
            ex = SyncTaskExecutor(workers=32, store=None)
            ex.load(parse_plan_text(PLANS.replace("URL", sim.url).replace("LAST", str(last)), "plans.toml", VALUES))
            events, revoking = [], []
            done = 0

            async def revoke():
                async with http.post(f"{sim.url}/_admin/revoke", params={"key": VALUES["KEY_B"]}) as answer:
                    assert answer.status == 200

            def listen(event):
                nonlocal done
                events.append(event)
                if getattr(event, "kind", None) == "done":
                    done += 1
                    if revoke_after is not None and done == revoke_after:
                        revoking.append(asyncio.get_running_loop().create_task(revoke()))

            ex.listen(listen)
            metrics = Metrics(ex)
            summary = await ex.run()
            await asyncio.gather(*revoking)
            said = metrics.exposition().decode()
            view = scopes_view(ex, {})
            ex.close()
            return summary, sim.stats.as_dict(), events, said, view

    return asyncio.run(go())


def test_two_keys_of_50_a_second_give_about_100_a_second_and_none_over_on_either_key():
    summary, stats, _, said, view = run_two_keys(600)
    assert summary.plans["rows"]["done"] == 600
    assert stats["violations"] == []
    by_key = stats["by_key"]
    assert set(by_key) == set(VALUES.values())
    assert min(by_key.values()) >= 240, by_key  # both keys carried the work (spread: about half each)
    samples = [s for family in text_string_to_metric_families(said) for s in family.samples]
    keys = {s.labels.get("key") for s in samples if s.name == "synctask_limit_capacity"}
    assert {"KEY_A", "KEY_B"} <= keys
    assert {(s.labels["key"], s.value) for s in samples if s.name == "synctask_key_usable"} == {
        ("KEY_A", 1.0), ("KEY_B", 1.0)}
    assert {v["key"] for v in view if v["key"]} == {"KEY_A", "KEY_B"}
    for value in VALUES.values():
        assert value not in said and value not in repr(view)


def test_a_key_revoked_mid_run_is_named_and_set_aside_and_the_other_finishes_the_work():
    summary, stats, events, said, view = run_two_keys(400, revoke_after=60)
    assert summary.plans["rows"]["done"] == 400 and summary.plans["rows"]["failed"] == 0
    assert stats["violations"] == []
    refused = [e for e in events if isinstance(e, KeyEvent)]
    assert [(e.vendor, e.key, e.left) for e in refused] == [("api", "KEY_B", ("KEY_A",))]  # told once
    assert "KEY_B" in refused[0].message and "KEY_A" in refused[0].message
    samples = [s for family in text_string_to_metric_families(said) for s in family.samples]
    assert {(s.labels["key"], s.value) for s in samples if s.name == "synctask_key_usable"} == {
        ("KEY_A", 1.0), ("KEY_B", 0.0)}
    assert [v["key"] for v in view if v["key_refused"]] and all(v["key"] == "KEY_B" for v in view if v["key_refused"])
    everything = repr(events) + said + repr(view)
    for value in VALUES.values():
        assert value not in everything


@pytest.mark.parametrize(("token", "extra", "said"), [
    ('[{ env = "KEY_A" }, { env = "KEY_A" }]', "", "vendors.api.token[1].env: KEY_A is listed twice"),
    ('[{ env = "KEY_A", account = "teem" }]', '[vendors.api.accounts.team]\nlimits = []\n',
     "vendors.api.token[0].account: no account 'teem': add [vendors.api.accounts.teem]"),
    ('[{ env = "KEY_A" }, "literal-key-value"]', "", "secrets come from the environment"),
    ("[]", "", "token = [] lists no key"),
    ('[{ env = "KEY_C" }]', "", "vendors.api.token[0].env: environment variable KEY_C is not set"),
])
def test_a_wrong_key_list_names_the_place_and_the_fix(token, extra, said):
    text = f'[vendors.api]\nconnector = "rest"\nbase_url = "http://127.0.0.1:1"\ntoken = {token}\n{extra}'
    with pytest.raises(PlanFileError) as err:
        parse_plan_text(text, "plans.toml", VALUES)
    assert said in str(err.value)
    assert "literal-key-value" not in str(err.value)


def test_limits_cannot_be_learned_with_several_keys_yet():
    text = '[vendors.api]\nconnector = "rest"\ntoken = [{ env = "KEY_A" }, { env = "KEY_B" }]\nlimits = "learn"\n'
    with pytest.raises(PlanFileError, match="cannot be learned with several keys"):
        parse_plan_text(text, "plans.toml", VALUES)


def test_permits_take_a_key_the_limits_chose_and_a_429_on_it_freezes_that_key_only():
    text = PLANS.replace("URL", "http://127.0.0.1:1").replace("LAST", "1")

    async def check():
        ex = SyncTaskExecutor(workers=2, store=None)
        ex.load(parse_plan_text(text, "plans.toml", VALUES), start=False)
        taken = [await ex.permits.take("api", wait=0) for _ in range(100)]
        assert Counter(p.key for p in taken) == {"KEY_A": 50, "KEY_B": 50}  # each key's whole limit
        with pytest.raises(PermitRefused):
            await ex.permits.take("api", "rows", wait=0)
        a = next(p for p in taken if p.key == "KEY_A")
        ex.permits.answered(a.id, "rate_limited", retry_after=30)
        now = time.time()
        assert ex.limiter.frozen_until("key:KEY_A:vendor:api", now) is not None
        assert ex.limiter.frozen_until("key:KEY_B:vendor:api", now) is None
        assert ex.limiter.frozen_until("vendor:api", now) is None
        ex.permits.close()

    asyncio.run(check())


def test_each_keys_daily_use_is_saved_and_restored_like_any_quota(tmp_path):
    text = PLANS.replace("URL", "URL2").replace("LAST", "40").replace(
        'limits = [{ rate = 50, per = "1s" }]', 'limits = [{ rate = 1000, per = "1d", window = "clock" }]')

    async def go():
        config = SimulatorConfig(profile="hidden", hidden_limits=((50, 1.0, False),), hidden_per_key=True)
        async with Simulator(config) as sim:
            plans = parse_plan_text(text.replace("URL2", sim.url), "plans.toml", VALUES)
            ex = SyncTaskExecutor(workers=8, state=tmp_path / "state.db", base_dir=tmp_path)
            ex.load(plans)
            await ex.run()
            ex.close()
            again = SyncTaskExecutor(workers=8, state=tmp_path / "state.db", base_dir=tmp_path)
            again.load(plans, start=False)
            await again.probe("rows")  # (restores the saved use, as every run does, and sends one more)
            now = time.time()
            used = {key: sum(w.used for w in again.limiter.windows(f"key:{key}:vendor:api", now)) for key in VALUES}
            again.close()
            return used

    used = asyncio.run(go())
    assert sum(used.values()) == 41 and min(used.values()) >= 15, used  # 40 saved, split over both keys, + the probe


def test_a_keys_rate_limit_headers_count_and_freeze_that_key_only():
    from synctask.connectors import Observation
    from synctask.model import SyncTask

    ex = SyncTaskExecutor(workers=2, store=None)
    ex.load(parse_plan_text(PLANS.replace("URL", "http://127.0.0.1:1").replace("LAST", "1"), "plans.toml", VALUES),
            start=False)
    task = SyncTask("rows", {"i": 1})
    task.key = "KEY_B"
    now = time.time()
    ex._heard.observed(task, Observation("vendor", 20, 1.0), now)
    used = {key: [w.used for w in ex.limiter.windows(f"key:{key}:vendor:api", now)] for key in VALUES}
    assert used == {"KEY_A": [0], "KEY_B": [20]}
    ex._heard.observed(task, Observation("vendor", 50, 60.0, freeze_for=30.0), now)  # "nothing left for 30 s"
    assert ex.limiter.frozen_until("key:KEY_B:vendor:api", now) == now + 30.0
    assert ex.limiter.frozen_until("key:KEY_A:vendor:api", now) is None
    assert ex.limiter.frozen_until("vendor:api", now) is None


def test_the_tushare_and_rest_connectors_send_the_key_the_task_took():
    from synctask.connectors.rest import RestConnector
    from synctask.connectors.tushare import TushareConnector
    from synctask.model import SyncTask

    vendor = keyed_vendor()
    task = SyncTask("p", {"ts_code": "000001.SZ"})
    for key in VALUES:
        task.key = key
        body = TushareConnector(vendor, Dataset("daily", "v", "daily")).request(task).json
        assert body["token"] == VALUES[key]
        rest = RestConnector(vendor, Dataset("d", "v", "d", options={"headers": {"Authorization": "Bearer {token}"},
                                                                      "query": {"apikey": "{token}"}}))
        request = rest.request(task)
        assert request.headers["Authorization"] == f"Bearer {VALUES[key]}" and request.params["apikey"] == VALUES[key]
