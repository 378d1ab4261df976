"""The daemon's plans over time: added over the API, kept across restarts, reloaded from the
file (SIGHUP or `synctask reload`), failed tasks retried, schedules firing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

from .served import TOKENS, api, client, daemon, opened, plan, wait_until

EXTRA_TOML = '''
[[plans]]
name = "extra"
dataset = "other"
priority = 5  # ahead of plan "other" on the same dataset
params = { i = { from = 1, to = 40 } }
'''

EXTRA_JSON = {
    "vendors": {"second": {"connector": "python:serve_tasks:fetch", "limits": [{"rate": 50, "per": "1s"}]}},
    "datasets": {"second": {"vendor": "second", "api": "python:serve_tasks:fetch",
                            "sink": {"kind": "sqlite", "path": "second.db", "key": ["i"]}}},
    "plans": [{"name": "extra2", "dataset": "second", "params": {"i": {"from": 1, "to": 30}}}],
}


def send(url: str, body: str, content_type: str, path: str = "/api/plans") -> tuple[int, dict]:
    request = urllib.request.Request(url + path, data=body.encode(), method="POST",
                                     headers={"Content-Type": content_type,
                                              "Authorization": f"Bearer {TOKENS[url]}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def names(url: str) -> set[str]:
    return {p["name"] for p in api(url)[1]["plans"]}


def test_added_plans_run_beside_the_others_and_a_restart_keeps_plans_and_states(workdir):
    with daemon(workdir, "--allow-code") as (_, url):  # EXTRA_JSON's vendor runs Python code
        wait_until(lambda: plan(url, "slow")["done"] > 5)
        status, answer = send(url, EXTRA_TOML, "application/toml")
        assert status == 201 and answer["added"] == ["extra"], answer
        status, answer = send(url, json.dumps(EXTRA_JSON), "application/json")
        assert status == 201 and answer["added"] == ["extra2"], answer
        wait_until(lambda: plan(url, "extra")["state"] == "completed" and plan(url, "extra2")["state"] == "completed")
        assert plan(url, "extra")["done"] == 40 and plan(url, "extra2")["done"] == 30
        assert plan(url, "slow")["state"] == "running"  # it went on meanwhile

        # Bad documents: 400 naming the place, as `synctask check` names it; nothing changes.
        status, answer = send(url, "[[plans]\nname = 1", "application/toml")
        assert status == 400 and "not valid TOML" in answer["error"] and "line 1" in answer["error"]
        status, answer = send(url, '{"plans": [', "application/json")
        assert status == 400 and "not valid JSON" in answer["error"] and "column" in answer["error"]
        typo = '[[plans]]\nname = "bad"\ndataset = "slwo"\nparams = { i = [1] }\n'
        status, answer = send(url, typo, "application/toml")
        assert status == 400, answer
        assert answer["problems"] == [{"where": "plans[0] (bad).dataset",
                                       "message": "unknown dataset 'slwo' (did you mean 'slow'?)"}]
        status, answer = send(url, EXTRA_TOML, "application/toml")
        assert status == 409 and "plan 'extra' already exists" in answer["error"]
        clash = {**EXTRA_JSON, "vendors": {"local": {"connector": "python:serve_tasks:fetch"}}, "plans": []}
        status, answer = send(url, json.dumps(clash), "application/json")
        assert status == 409 and "vendor 'local' is already defined differently" in answer["error"]
        assert names(url) == {"slow", "other", "extra", "extra2"}

        api(url, "POST", "/api/plans/slow/pause")
        api(url, "POST", "/api/plans/other/stop")
        assert api(url, "DELETE", "/api/plans/extra2") == (200, {"plan": "extra2", "removed": True})
        wait_until(lambda: plan(url, "slow")["in_flight"] == 0)
        counted = ("state", "done", "failed", "skipped", "rows", "retries", "freezes", "total", "run_id")
        before = {name: {k: plan(url, name)[k] for k in counted} for name in ("slow", "other", "extra")}
        slow_done = before["slow"]["done"]

    with daemon(workdir) as (_, url):  # the same state file: the same plans, in the same states and counts
        assert names(url) == {"slow", "other", "extra"}
        after = {name: {k: plan(url, name)[k] for k in counted} for name in ("slow", "other", "extra")}
        assert after == before
        assert before["slow"]["state"] == "paused" and before["other"]["state"] == "stopped"
        assert before["extra"]["state"] == "completed"  # it had finished: it does not run again by itself
        assert plan(url, "extra")["last_run"]["state"] == "completed"
        api(url, "POST", "/api/plans/slow/resume")
        wait_until(lambda: plan(url, "slow")["done"] > slow_done + 10)
        view = plan(url, "slow")
        assert view["skipped"] == 0 and view["run_id"] == before["slow"]["run_id"]  # one run, taken up


NEW_FILE_PLANS = '''
[[plans]]
name = "third"
dataset = "other"
priority = 5
params = { i = { from = 1, to = 20 } }
'''


def test_sighup_and_reload_apply_the_files_changes_without_stopping_the_others(workdir):
    plans_file = workdir / "plans.toml"
    with daemon(workdir) as (proc, url):
        wait_until(lambda: plan(url, "slow")["done"] > 5)
        run_id = plan(url, "slow")["run_id"]
        text = plans_file.read_text()
        without_other = text[:text.index('[[plans]]\nname = "other"')]
        plans_file.write_text(without_other + NEW_FILE_PLANS)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: names(url) == {"slow", "third"})
        wait_until(lambda: plan(url, "third")["state"] == "completed")
        before = plan(url, "slow")
        assert before["run_id"] == run_id and before["state"] == "running"  # untouched by the reload
        wait_until(lambda: plan(url, "slow")["done"] > before["done"] + 10)

        plans_file.write_text(without_other + NEW_FILE_PLANS.replace("to = 20", "to = 25"))
        reloaded = client(workdir, url, "reload")
        assert reloaded.returncode == 0 and reloaded.stdout.strip() == "changed: third", reloaded.stderr
        wait_until(lambda: plan(url, "third")["state"] == "completed" and plan(url, "third")["total"] == 25)
        assert plan(url, "third")["skipped"] == 20  # the first 20 were done: only 5 more ran

        plans_file.write_text(without_other + NEW_FILE_PLANS.replace('dataset = "other"', 'dataset = "othr"'))
        broken = client(workdir, url, "reload")
        assert broken.returncode == 1
        assert "plans[1] (third).dataset: unknown dataset 'othr' (did you mean 'other'?)" in broken.stderr
        assert names(url) == {"slow", "third"} and plan(url, "slow")["run_id"] == run_id

        unchanged = client(workdir, url, "reload", "--json")
        assert unchanged.returncode == 1  # still broken: the file is what it says, nothing applied


FAILING_MODULE = '''
from pathlib import Path
from synctask import InvalidRequest

async def fetch(i):
    if i % 5 == 0 and not Path("fixed").exists():
        raise InvalidRequest(f"item {i} is not there yet")
    return [{"i": i}]
'''

RETRY_PLANS = '''
[vendors.local]
connector = "python:flaky_tasks:fetch"

[datasets.flaky]
vendor = "local"
api = "python:flaky_tasks:fetch"
sink = { kind = "sqlite", path = "flaky.db", key = ["i"] }

[[plans]]
name = "flaky"
dataset = "flaky"
params = { i = { from = 1, to = 20 } }
'''


def test_retry_runs_a_plans_failed_tasks_again(workdir):
    (workdir / "flaky_tasks.py").write_text(FAILING_MODULE)
    (workdir / "plans.toml").write_text(RETRY_PLANS)
    with daemon(workdir) as (_, url):
        wait_until(lambda: plan(url, "flaky")["state"] == "completed")
        view = plan(url, "flaky")
        assert view["done"] == 16 and view["failed"] == 4
        assert any("item 5 is not there yet" in f["message"] and f["attempt"] == 1 for f in view["recent_failures"])
        (workdir / "fixed").write_text("")
        retried = client(workdir, url, "retry", "flaky")
        assert retried.returncode == 0 and retried.stdout.strip() == "flaky: running", retried.stderr
        wait_until(lambda: plan(url, "flaky")["state"] == "completed")
        view = plan(url, "flaky")
        assert view["done"] == 4 and view["skipped"] == 16 and view["failed"] == 0
        nothing = client(workdir, url, "retry", "flaky")  # no failed task left: says so, starts nothing
        assert nothing.returncode == 0 and "has no failed tasks: nothing to retry" in nothing.stdout, nothing
        assert plan(url, "flaky")["run_id"] == view["run_id"] and plan(url, "flaky")["state"] == "completed"


def test_schedules_fire_in_the_daemon(workdir):
    at = (datetime.now(UTC) + timedelta(seconds=8)).strftime("%Y-%m-%dT%H:%M:%S")  # after a slow start too
    (workdir / "plans.toml").write_text((workdir / "plans.toml").read_text().replace(
        '[[plans]]\nname = "slow"', '[[plans]]\nname = "slow"\nschedule = "every 1s"').replace(
        "to = 100000 }", "to = 3 }").replace(
        '[[plans]]\nname = "other"', f'[[plans]]\nname = "other"\nschedule = "at {at} UTC"'))
    with daemon(workdir) as (_, url):
        assert plan(url, "other")["next_due"] is not None
        wait_until(lambda: plan(url, "other")["last_run"] is not None
                   and plan(url, "other")["last_run"]["state"] == "completed")
        assert plan(url, "other")["next_due"] is None  # an 'at' schedule fires once
        first = None
        wait_until(lambda: plan(url, "slow")["last_run"] is not None)
        first = plan(url, "slow")["last_run"]["id"]
        wait_until(lambda: plan(url, "slow")["last_run"]["id"] != first)  # every second, a new run


REST_PLANS = '''
[vendors.items-api]
connector = "rest"
base_url = "{url}"
token = {{ env = "ITEMS_API_TOKEN" }}
limits = [{{ rate = 15, per = "1s" }}]
options = {{ headers = {{ Authorization = "Bearer {{token}}" }} }}

[datasets.items]
vendor = "items-api"
sink = {{ kind = "sqlite", path = "items.db", table = "items", key = ["id"] }}
options = {{ path = "/v1/items", query = {{ day = "{{day}}", page_size = "10" }}, records = "data.items", pagination = {{ kind = "cursor", param = "cursor", path = "meta.next_cursor" }} }}

[[plans]]
name = "january"
dataset = "items"
params = {{ day = {{ from = "2024-01-01", to = "2024-01-31", step = "1d" }} }}
retry = {{ attempts = 8, backoff = "0.05s..0.5s" }}
'''

FEBRUARY = '''
[[plans]]
name = "february"
dataset = "items"
priority = 1
params = { day = { from = "2024-02-01", to = "2024-02-10", step = "1d" } }
retry = { attempts = 8, backoff = "0.05s..0.5s" }
'''


def test_against_the_simulator_plans_are_added_paused_and_resumed_and_metrics_match_the_run(workdir):
    from prometheus_client.parser import text_string_to_metric_families

    sim = subprocess.Popen([sys.executable, "-m", "synctask.cli", "simulate", "--profile", "rest", "--port", "0",
                            "--faults", "5xx=0.05"], stdout=subprocess.PIPE, text=True)
    try:
        sim_url = sim.stdout.readline().split(" on ")[1].split()[0]
        (workdir / "plans.toml").write_text(REST_PLANS.format(url=sim_url))
        (workdir / "february.toml").write_text(FEBRUARY)
        with daemon(workdir, ITEMS_API_TOKEN="demo-token") as (proc, url):
            wait_until(lambda: plan(url, "january")["done"] >= 10)
            added = client(workdir, url, "add", str(workdir / "february.toml"))
            assert added.returncode == 0 and added.stdout.strip() == "february: added, running", added.stderr
            paused = client(workdir, url, "pause", "january")
            assert paused.stdout.strip() == "january: paused"
            wait_until(lambda: plan(url, "january")["in_flight"] == 0)
            held, feb = plan(url, "january")["done"], plan(url, "february")["done"]
            # February goes on (or ends: under load it may have few tasks left when january pauses).
            wait_until(lambda: plan(url, "february")["done"] >= feb + 10 or plan(url, "february")["state"] == "completed")
            assert plan(url, "january")["done"] == held  # paused: nothing of it went meanwhile
            assert client(workdir, url, "resume", "january").stdout.strip() == "january: running"
            wait_until(lambda: all(plan(url, n)["state"] == "completed" for n in ("january", "february")), 90)
            views = {n: plan(url, n) for n in ("january", "february")}
            with opened(url, "/metrics") as answer:
                text = answer.read().decode()
            proc.send_signal(signal.SIGTERM)
            said, _ = proc.communicate(timeout=30)
        with urllib.request.urlopen(sim_url + "/_admin/stats", timeout=10) as answer:
            vendor = json.loads(answer.read())
    finally:
        sim.kill()
        sim.communicate()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}

    def requests(outcome: str) -> float:
        return samples.get(("synctask_requests_total", (("dataset", "items"), ("outcome", outcome),
                                                        ("vendor", "items-api"))), 0.0)

    done = sum(v["done"] for v in views.values())
    assert all(v["failed"] == 0 for v in views.values()) and views["january"]["total"] > 31  # pages found
    errors = sum(requests(o) for o in ("server", "network", "timeout"))
    assert requests("ok") == done
    assert errors == vendor["faults"].get("error", 0) == sum(v["retries"] for v in views.values())
    assert requests("ok") + errors == vendor["served"]  # every request the vendor saw, counted once
    assert f"{done:,} tasks done in this process" in said
    assert vendor["violations"] == []


def test_a_plans_definition_is_shown_without_any_secret(tmp_path, monkeypatch):
    from synctask.server.catalog import Catalog

    monkeypatch.setenv("ITEMS_API_TOKEN", "tok-from-env-12345")
    literal = REST_PLANS.format(url="http://127.0.0.1:9").replace(
        '{ Authorization = "Bearer {token}" }', '{ Authorization = "Bearer {token}", X-Api-Key = "lit-9f8e7d" }')
    (tmp_path / "plans.toml").write_text(literal)
    catalog = Catalog(tmp_path / "plans.toml")
    catalog.plans()  # valid, and its token is now a known secret
    shown = json.dumps(catalog.definition("january"))
    assert "lit-9f8e7d" not in shown and "tok-from-env-12345" not in shown
    assert '"Authorization": "Bearer {token}"' in shown and '"env": "ITEMS_API_TOKEN"' in shown


def test_a_removed_plan_closes_and_forgets_its_sink_dataset_and_vendor(workdir):
    added = {"vendors": {"third": {"connector": "python:serve_tasks:fetch", "limits": [{"rate": 200, "per": "1s"}]}},
             "datasets": {"lines": {"vendor": "third", "sink": {"kind": "jsonl", "path": "lines.jsonl", "key": ["i"]}}},
             "plans": [{"name": "lines", "dataset": "lines", "params": {"i": {"from": 1, "to": 100000}}}]}
    out = workdir / "lines.jsonl"
    with daemon(workdir, "--allow-code") as (proc, url):
        assert api(url, "POST", "/api/plans", added)[0] == 201
        wait_until(lambda: plan(url, "lines")["done"] > 20)
        assert api(url, "DELETE", "/api/plans/lines") == (200, {"plan": "lines", "removed": True})
        before = (out.read_bytes(), out.stat().st_mtime_ns)
        assert len(before[0].splitlines()) >= 20
        # Forgotten: the same names may now mean something else (no "already defined differently").
        changed = {**added, "vendors": {"third": {"connector": "python:serve_tasks:fetch"}},
                   "datasets": {"lines": {"vendor": "third", "sink": {"kind": "jsonl", "path": "other.jsonl",
                                                                       "key": ["i"]}}},
                   "plans": [{"name": "again", "dataset": "lines", "params": {"i": [1, 2, 3]}}]}
        status, answer = api(url, "POST", "/api/plans", changed)
        assert status == 201, answer
        wait_until(lambda: plan(url, "again")["state"] == "completed")
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before  # not touched after its removal, shutdown included
    assert len((workdir / "other.jsonl").read_text().splitlines()) == 3
