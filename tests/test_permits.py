"""Permits: the daemon lends its exact limits to other programs on the same keys. A permit counts
like one of the engine's own requests (in the same windows, caps and freezes), holds its room
until the program says it was answered, and frees it when its hold ends if nobody says so."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request

import pytest

from synctask import SyncTaskExecutor, parse_plan_text
from synctask.permits import PermitRefused

from .served import api, client, daemon, env_for, opened, plan, wait_until
from .test_learned_limits import hidden_rows_plans

PLANS = '''
[vendors.v]
connector = "python:asyncio:sleep"
token = { env = "V_KEY" }
limits = [{ rate = 3, per = "1s" }]

[datasets.d]
vendor = "v"
api = "python:asyncio:sleep"
weight = 1
sink = { kind = "memory" }
'''


def desk():
    ex = SyncTaskExecutor(store=None)
    ex.load(parse_plan_text(PLANS, "plans.toml", {"V_KEY": "secret-key-value-123"}), start=False)
    return ex


def test_a_permit_counts_in_the_vendors_window_until_one_window_after_its_answer():
    async def go():
        ex = desk()
        taken = [await ex.permits.take("v", wait=0) for _ in range(3)]
        assert {p.key for p in taken} == {"V_KEY"}  # the variable's name, never its value
        with pytest.raises(PermitRefused) as full:
            await ex.permits.take("v", wait=0)
        assert full.value.status == 503 and full.value.retry_at is None  # held by requests not answered yet
        before = time.time()
        for permit in taken:
            ex.permits.answered(permit.id, "done")
        after = time.time()
        with pytest.raises(PermitRefused) as later:
            await ex.permits.take("v", "d", wait=0.2)
        assert later.value.retry_at is not None
        assert before + 1.0 <= later.value.retry_at <= after + 1.0 + 1e-6  # room back one window after the answers
        again = await ex.permits.take("v", "d", wait=5.0)
        assert again.taken >= before + 1.0 and again.dataset == "d"
        ex.permits.answered(again.id)

    asyncio.run(go())


def test_a_refusal_freezes_the_vendor_and_an_unanswered_permit_frees_its_room_when_its_hold_ends():
    async def go():
        ex = desk()
        permit = await ex.permits.take("v", wait=0)
        before = time.time()
        ex.permits.answered(permit.id, "rate_limited", retry_after=5)
        frozen = ex.scheduler.limiter.frozen_until("vendor:v", time.time())
        assert frozen is not None and before + 5 <= frozen <= time.time() + 5
        with pytest.raises(PermitRefused):
            await ex.permits.take("v", wait=0.1)
        ex.scheduler.thaw("vendor:v")
        held = await ex.permits.take("v", wait=0, hold=0.1)
        assert ex.permits.in_flight() == {("v", None): 1}
        await asyncio.sleep(0.2)
        assert ex.permits.in_flight() == {}  # counted as answered when its hold ended
        with pytest.raises(PermitRefused) as gone:
            ex.permits.answered(held.id)
        assert gone.value.status == 404

    asyncio.run(go())


@pytest.mark.parametrize(("call", "status", "words"), [
    (("nope",), 404, "no vendor named 'nope'"),
    (("v", "other"), 404, "no dataset named 'other'"),
    (("v", None, 4), 400, "can never pass vendor:v's 3 per 1s"),
    (("v", None, 0), 400, "weight must be a whole number"),
])
def test_a_permit_that_cannot_be_given_says_why(call, status, words):
    async def go():
        with pytest.raises(PermitRefused) as refused:
            await desk().permits.take(*call, wait=0)
        assert refused.value.status == status and words in str(refused.value)

    asyncio.run(go())


HIDDEN_PLANS = hidden_rows_plans("quiet", 2000).replace('limits = "learn"', 'limits = [{ rate = 40, per = "1s" }]')

SCRIPT = '''
import asyncio, sys, aiohttp, synctask

async def main(url, first, count, permits):
    desk = synctask.Permits()
    async with aiohttp.ClientSession() as session:
        async def one(i):
            if not permits:
                async with session.get(f"{url}/v1/hidden", params={"i": str(i)}) as answer:
                    return answer.status
            async with desk.take("quiet", dataset="rows") as permit:
                async with session.get(f"{url}/v1/hidden", params={"i": str(i)}) as answer:
                    permit.answered()
                    if answer.status == 429:
                        permit.refused(answer.headers.get("Retry-After"))
                    return answer.status
        statuses = await asyncio.gather(*(one(i) for i in range(first, first + count)))
    await desk.close()
    print(sum(1 for s in statuses if s == 200))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "permits"))
'''


def test_a_script_in_another_process_taking_permits_keeps_the_vendor_under_its_limit_and_without_does_not(
        tmp_path):
    """The daemon runs a plan at a hidden vendor's full 40 per second; a script in another process
    makes 120 requests to the same vendor: with permits, not one over the limit; without, over."""
    sim = subprocess.Popen([sys.executable, "-m", "synctask.cli", "simulate", "--profile", "hidden", "--port", "0",
                            "--hidden", "40 per 1s"], stdout=subprocess.PIPE, text=True)

    def violations() -> int:
        with urllib.request.urlopen(f"{sim_url}/_admin/stats", timeout=10) as answer:
            return len(json.loads(answer.read())["violations"])

    try:
        assert sim.stdout is not None
        sim_url = sim.stdout.readline().split(" on ")[1].split()[0]
        (tmp_path / "plans.toml").write_text(HIDDEN_PLANS.replace("URL", sim_url))
        (tmp_path / "script.py").write_text(SCRIPT)
        with daemon(tmp_path) as (_, url):
            wait_until(lambda: plan(url, "rows")["done"] >= 40, 60)

            def script(first: int, permits: bool) -> int:
                ran = subprocess.run([sys.executable, str(tmp_path / "script.py"), sim_url, str(first), "120",
                                      "permits" if permits else "bare"], capture_output=True, text=True, timeout=120,
                                     env=env_for(tmp_path, SYNCTASK_URL=url))
                assert ran.returncode == 0, ran.stderr
                return int(ran.stdout)

            assert script(100_000, permits=True) == 120  # every request of the script answered, none refused
            assert plan(url, "rows")["state"] == "running"  # (the plan was using the limit all along)
            assert violations() == 0
            status, out = api(url, path="/api/permits")
            assert status == 200 and out["in_flight"] == [] and out["taken_last_minute"] == 120
            script(200_000, permits=False)
            assert violations() > 0  # the same script, without permits: over (so the test can fail)
    finally:
        sim.kill()
        sim.communicate()


def test_the_permit_command_runs_one_command_under_one_permit(tmp_path):
    (tmp_path / "plans.toml").write_text(PLANS.replace('sink = { kind = "memory" }',
                                                       'sink = { kind = "jsonl", path = "d.jsonl", key = ["x"] }'))
    with daemon(tmp_path, V_KEY="secret-key-value-123") as (_, url):
        code = "import os, sys; print(os.environ['SYNCTASK_PERMIT'][:1], os.environ['SYNCTASK_KEY']); sys.exit(3)"
        ran = client(tmp_path, url, "permit", "v", "--dataset", "d", "--", sys.executable, "-c", code)
        assert ran.returncode == 3 and ran.stdout.split() == ["p", "V_KEY"], ran.stderr  # its own exit status
        status, out = api(url, path="/api/permits")
        assert out["in_flight"] == [] and out["taken"] == [{"vendor": "v", "dataset": "d", "count": 1}]
        with opened(url, "/metrics") as answer:
            metrics = answer.read().decode()
        assert 'synctask_permits_taken_total{dataset="d",vendor="v"} 1.0' in metrics
        assert "secret-key-value-123" not in metrics + ran.stdout + ran.stderr
        status_line = client(tmp_path, url, "status").stdout
        assert "permits to other programs: 0 out, 1 taken in the last minute" in status_line, status_line
        refused = client(tmp_path, url, "permit", "nope", "--", "true")
        assert refused.returncode == 1 and "no vendor named 'nope'" in refused.stderr
        status, _ = api(url, "POST", "/api/permits", {"vendor": "v"}, token="")
        assert status == 401  # same token rules as the rest of the API
        status, said = api(url, "POST", "/api/permits", [1])
        assert status == 400 and "send a JSON object" in said["error"]
        status, said = api(url, "POST", "/api/permits", {"vendor": "v", "wait": float("nan")})
        assert status == 400 and "wait must be 0..3600 s" in said["error"]


def test_permits_count_in_a_learned_limit_and_their_refusals_teach_it():
    """A vendor whose limits are learned: other programs' requests are in the learner's count of
    what was sent, and a 429 one of them got is explained like one of the engine's own."""
    async def go():
        text = PLANS.replace('limits = [{ rate = 3, per = "1s" }]', 'limits = "learn"')
        ex = SyncTaskExecutor(store=None)
        ex.load(parse_plan_text(text, "plans.toml", {"V_KEY": "k-123456789"}), start=False)
        learner = ex.learners.by_scope["vendor:v"]
        for _ in range(2):  # the probe: 2 per 1s, one in flight
            permit = await ex.permits.take("v", "d", wait=2.0)
            ex.permits.answered(permit.id)
        assert learner.recent(1.0, time.time()) == 2
        permit = await ex.permits.take("v", "d", wait=3.0)
        ex.permits.answered(permit.id, "rate_limited", retry_after=1)
        assert learner.refusals == 1 and ex.learners.describe("vendor:v").startswith("learned: "), learner.describe()
        expired = await ex.permits.take("v", "d", wait=5.0, hold=0.05)
        await asyncio.sleep(0.1)
        assert expired.request not in ex.learners._tickets  # its hold ended: answered, for the learner too

    asyncio.run(go())


def test_a_permit_lent_while_its_caller_went_away_is_given_back_at_once():
    """The engine's dispatch may lend a waiting permit just as its caller gives up (a client that
    disconnected): the room is not held until the permit's hold ends."""
    async def go():
        ex = SyncTaskExecutor(store=None)
        ex.load(parse_plan_text(PLANS.replace('{ rate = 3, per = "1s" }', "{ concurrency = 1 }"), "plans.toml",
                                {"V_KEY": "k-123456789"}), start=False)
        first = await ex.permits.take("v", wait=0)
        waiting = asyncio.create_task(ex.permits.take("v", wait=5.0, hold=600.0))
        await asyncio.sleep(0.05)
        ex.permits.answered(first.id)
        ex.permits.grant(time.time())  # as a dispatch turn would: lent, but its caller has not run yet
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert ex.permits.out == {}  # given back, not held for its 600 s hold
        again = await ex.permits.take("v", wait=0)
        ex.permits.answered(again.id)

    asyncio.run(go())
