"""`synctask serve` as a real process, driven over its API and by the `synctask` client commands."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time

from .served import api, client, daemon, env_for, opened, plan, wait_until


def test_plans_are_controlled_over_the_api_while_the_other_keeps_its_pace(workdir):
    with daemon(workdir) as (_, url):
        assert api(url, path="/healthz") == (200, {"ok": True, "plans": 2, "workers": 16})
        wait_until(lambda: plan(url, "slow")["done"] > 10 and plan(url, "other")["done"] > 10)

        assert api(url, "POST", "/api/plans/slow/pause")[1] == {"plan": "slow", "state": "paused", "changed": True}
        assert api(url, "POST", "/api/plans/slow/pause")[1]["changed"] is False  # pausing a paused plan is fine
        wait_until(lambda: plan(url, "slow")["in_flight"] == 0)
        paused_at, other_at = plan(url, "slow")["done"], plan(url, "other")["done"]
        wait_until(lambda: plan(url, "other")["done"] > other_at + 20)  # the other one keeps going
        assert plan(url, "slow")["done"] == paused_at  # while nothing more of the paused plan is done

        assert api(url, "POST", "/api/plans/slow/resume")[1]["state"] == "running"
        wait_until(lambda: plan(url, "slow")["done"] > paused_at)
        assert api(url, "POST", "/api/plans/slow/stop")[1]["state"] == "stopped"
        assert api(url, "POST", "/api/plans/slow/start")[1]["state"] == "running"
        assert api(url, "POST", "/api/plans/slow/cancel")[1]["state"] == "cancelled"
        status, answer = api(url, "POST", "/api/plans/slow/pause")
        assert status == 409 and "cancelled" in answer["error"]
        assert api(url, "DELETE", "/api/plans/slow")[1] == {"plan": "slow", "removed": True}
        status, answer = api(url, path="/api/plans/slow")
        assert status == 404 and "no plan named 'slow'" in answer["error"]
        status, answer = api(url, "POST", "/api/plans/other/explode")
        assert status == 404 and "use one of" in answer["error"]

        assert api(url, "PUT", "/api/workers", {"workers": 4})[1] == {"workers": 4}
        status, answer = api(url, "PUT", "/api/workers", {"workers": "many"})
        assert status == 400 and '{"workers": N}' in answer["error"]
        scopes = {s["scope"]: s for s in api(url, path="/api/vendors")[1]["scopes"]}
        local = scopes["vendor:local"]
        assert local["vendor"] == "local" and local["limits"][0]["limit"].startswith("100 per 1s")
        assert re.fullmatch(r"\d+ of 100 in the last 1s", local["limits"][0]["text"])
        assert local["limits"][0]["capacity"] == 100 and local["freeze"] is None


def test_the_client_commands_show_and_change_the_daemons_plans(workdir):
    with daemon(workdir) as (_, url):
        wait_until(lambda: plan(url, "other")["done"] > 5)
        shown = client(workdir, url, "status")
        assert shown.returncode == 0, shown.stderr
        assert "slow" in shown.stdout and "other" in shown.stdout and "running" in shown.stdout
        assert "\x1b[" not in shown.stdout  # plain text when piped
        assert re.search(r"^other: running, [\d,]+/100,000 done, \d+ failed, \d+ in flight, [\d.]+/s, ETA \S+( \S+)?, "
                         r"next run -$", shown.stdout, re.M), shown.stdout  # one whole line per plan
        assert re.search(r"vendor:local: \d+ of 100 in the last 1s", shown.stdout), shown.stdout
        paused = client(workdir, url, "pause", "other")
        assert paused.returncode == 0 and paused.stdout.strip() == "other: paused"
        again = client(workdir, url, "pause", "other")
        assert again.stdout.strip() == "other: paused (already paused)"
        as_json = json.loads(client(workdir, url, "status", "other", "--json").stdout)
        assert as_json["state"] == "paused" and "recent_failures" in as_json
        unknown = client(workdir, url, "resume", "nope")
        assert unknown.returncode == 1 and "answered 404: no plan named 'nope'" in unknown.stderr
        assert "Traceback" not in unknown.stderr
        assert client(workdir, url, "workers", "3").stdout.strip() == "workers: 3"


def test_no_daemon_is_a_clear_message_and_exit_1(workdir):
    result = client(workdir, "http://127.0.0.1:9", "status")
    assert result.returncode == 1
    assert "no synctask daemon answers at http://127.0.0.1:9" in result.stderr and "synctask serve" in result.stderr


def test_every_call_needs_the_token_on_any_address_and_the_commands_find_it(workdir):
    token = "s3cret-t0ken-value"
    with daemon(workdir, "--host", "127.0.0.2", SYNCTASK_API_TOKEN=token) as (proc, url):
        assert url.startswith("http://127.0.0.2:")
        status, answer = api(url, token="")
        assert status == 401 and "Bearer" in answer["error"]
        assert api(url, "POST", "/api/plans/slow/pause", token="wrong")[0] == 401
        status, answer = api(url, token=token)
        assert status == 200 and {p["name"] for p in answer["plans"]} == {"slow", "other"}
        assert token not in json.dumps(answer)
        shown = client(workdir, url, "status")  # the token from the daemon's runtime file
        assert shown.returncode == 0 and "slow" in shown.stdout, shown.stderr
        denied = client(workdir, url, "status", SYNCTASK_API_TOKEN="wrong")
        assert denied.returncode == 1 and "401" in denied.stderr and "Traceback" not in denied.stderr


def test_sigterm_stops_the_daemon_gracefully(workdir):
    with daemon(workdir) as (proc, url):
        wait_until(lambda: plan(url, "other")["done"] > 5)
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "stopped" in stdout and "progress saved" in stdout


def test_the_event_stream_carries_the_executors_events(workdir):
    with daemon(workdir) as (_, url):
        kinds = set()
        with opened(url, "/api/events?tasks=all") as stream:
            api(url, "POST", "/api/plans/slow/pause")
            for raw in stream:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    for event in json.loads(line[6:]):  # the events of one loop turn
                        kinds.add((event["type"], event.get("kind") or event.get("state")))
                if {("plan", "paused"), ("task", "done"), ("task", "started")} <= kinds:
                    break  # (it would wait for them until the 10 s timeout otherwise)


def test_metrics_parse_and_their_counts_match_the_plans(workdir):
    from prometheus_client.parser import text_string_to_metric_families

    with daemon(workdir) as (_, url):
        wait_until(lambda: plan(url, "slow")["done"] > 60 and plan(url, "other")["done"] > 60)  # past 1 s: limits bind
        for name in ("slow", "other"):
            api(url, "POST", f"/api/plans/{name}/pause")
        wait_until(lambda: plan(url, "slow")["in_flight"] == 0 and plan(url, "other")["in_flight"] == 0)
        with opened(url, "/metrics") as answer:
            assert answer.headers["Content-Type"].startswith("text/plain")
            text = answer.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        for name in ("slow", "other"):
            done = plan(url, name)["done"]
            assert samples[("synctask_tasks_total", (("outcome", "done"), ("plan", name)))] == done
            assert samples[("synctask_plan_tasks", (("plan", name), ("state", "done")))] == done
            assert samples[("synctask_tasks_in_flight", (("plan", name),))] == 0
        requests = sum(v for (n, labels), v in samples.items() if n == "synctask_requests_total"
                       and ("outcome", "ok") in labels and ("vendor", "local") in labels)
        assert requests == plan(url, "slow")["done"] + plan(url, "other")["done"]
        assert samples[("synctask_workers", ())] == 16
        window = (("scope", "vendor:local"), ("vendor", "local"), ("window", "1s"))  # no node label off Ray
        assert samples[("synctask_limit_capacity", window)] == 100
        # Python tasks are no HTTP requests: no duration series for them (test_metrics has HTTP's).
        assert ("synctask_request_duration_seconds_count", (("vendor", "local"),)) not in samples
        assert samples[("synctask_limit_wait_seconds_count", (("vendor", "local"),))] > 0  # 100/s holds them back
        assert "_created" not in text  # one series per counter, not two
        assert "serve_tasks" not in text and ":" not in "".join(  # no task id in any label
            v for (_, labels) in samples for k, v in labels if k not in ("scope", "window"))


def test_the_default_stream_carries_progress_snapshots_and_leaves_routine_task_events_out(workdir):
    with daemon(workdir) as (_, url):
        snapshots, types = [], set()
        with opened(url, "/api/events") as stream:
            api(url, "POST", "/api/plans/slow/pause")
            for raw in stream:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                for event in json.loads(line[6:]):
                    types.add((event["type"], event.get("kind") or event.get("state")))
                    if event["type"] == "progress":
                        snapshots.append(event)
                if len(snapshots) >= 3 and ("plan", "paused") in types:
                    break
        assert ("task", "done") not in types and ("task", "started") not in types
        last = {p["name"]: p for p in snapshots[-1]["plans"]}
        assert last["slow"]["state"] == "paused" and last["other"]["done"] > snapshots[0]["plans"][1]["done"]
        assert snapshots[-1]["scopes"][0]["limits"][0]["text"].endswith("in the last 1s")
        followed = subprocess.Popen([sys.executable, "-m", "synctask.cli", "events", "--url", url],
                                    stdout=subprocess.PIPE, text=True, env=env_for(workdir))
        try:
            def toggle() -> None:  # until the client has joined the stream and printed a plan change
                while followed.poll() is None and not said:
                    for action in ("resume", "pause"):
                        api(url, "POST", f"/api/plans/slow/{action}")
                    time.sleep(0.2)

            said: list[str] = []
            toggler = threading.Thread(target=toggle, daemon=True)
            toggler.start()
            said.append(followed.stdout.readline())
            toggler.join(timeout=30)  # its last calls are answered before the daemon goes
            assert json.loads(said[0])["type"] == "plan"  # progress snapshots are left out
        finally:
            followed.kill()
            followed.communicate()


def test_a_url_that_is_no_address_is_a_sentence(workdir):
    for url in ("notaurl", "http://127.0.0.1:notaport", "ftp://127.0.0.1"):
        result = client(workdir, url, "status")
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "http://127.0.0.1:8737" in result.stderr  # what an address looks like


def test_a_control_op_on_a_plan_that_exists_but_has_no_run_is_409_with_a_sentence(workdir):
    text = (workdir / "plans.toml").read_text().replace('[[plans]]\nname = "slow"',
                                                        '[[plans]]\nname = "slow"\nschedule = "every 1d"')
    (workdir / "plans.toml").write_text(text)
    with daemon(workdir) as (_, url):
        assert plan(url, "slow")["state"] == "idle"  # scheduled, not due yet
        for action in ("pause", "stop", "resume", "cancel"):
            status, answer = api(url, "POST", f"/api/plans/slow/{action}")
            assert status == 409 and "is idle" in answer["error"] and "start it first" in answer["error"], answer
        assert api(url, "POST", "/api/plans/slow/start")[1]["state"] == "running"
        status, answer = api(url, "POST", "/api/plans/nope/pause")
        assert status == 404  # a plan that does not exist at all


def test_events_says_when_the_daemon_goes_away_and_what_a_refusal_means(workdir):
    command = [sys.executable, "-m", "synctask.cli", "events"]
    with daemon(workdir) as (proc, url):
        refused = subprocess.run([*command, "--url", url], env=env_for(workdir, SYNCTASK_API_TOKEN="not-the-token"),
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode == 1 and "answered 401" in refused.stderr, refused.stderr
        assert "token" in refused.stderr.split("answered 401", 1)[1]  # the daemon's sentence, not "Unauthorized"
        followed = subprocess.Popen([*command, "--url", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env_for(workdir))
        try:
            said: list[str] = []

            def toggle() -> None:  # until the client has joined the stream and printed a plan change
                while followed.poll() is None and not said:
                    for action in ("resume", "pause"):
                        api(url, "POST", f"/api/plans/slow/{action}")
                    time.sleep(0.2)

            toggler = threading.Thread(target=toggle, daemon=True)
            toggler.start()
            said.append(followed.stdout.readline())
            toggler.join(timeout=30)  # its last calls are answered before the daemon goes (CI saw one refused)
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
            _, err = followed.communicate(timeout=30)
        finally:
            if followed.poll() is None:
                followed.kill()
                followed.communicate()
    assert followed.returncode == 1 and "Traceback" not in err, err
    assert f"the daemon at {url}" in err and ("went away" in err or "ended its event stream" in err), err
