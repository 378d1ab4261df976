"""`synctask serve` as an attacker meets it: a real daemon, real sockets. No call without the
owner's token, no foreign Host or Origin, no simple cross-site request acts, plans added over
the API run no code and write nowhere outside the data folder unless the owner allowed it, and
the commands find the daemon and its token in a runtime file only the user can read."""

from __future__ import annotations

import http.client
import json
import os
import stat
import urllib.parse
from pathlib import Path

from .served import RCE, TOKENS, api, client, daemon, plan


def raw(url: str, method: str, path: str, headers: dict[str, str], body: str | None = None) -> tuple[int, dict]:
    """A request with exactly these headers (Host included), as curl or a browser would send it."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in {"Host": parts.netloc, **headers}.items():
            conn.putheader(name, value)
        data = body.encode() if body is not None else b""
        if body is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data if body is not None else None)
        answer = conn.getresponse()
        text = answer.read()
        assert "Access-Control-Allow-Origin" not in answer.headers  # never: no page may read an answer
        return answer.status, json.loads(text) if text.startswith(b"{") else {"text": text.decode()}
    finally:
        conn.close()


def test_the_curl_repro_of_a_cross_site_plan_is_refused_and_runs_nothing(workdir):
    with daemon(workdir) as (_, url):
        token = TOKENS[url]
        cases = [
            {"Content-Type": "text/plain", "Origin": "http://evil.example"},  # the repro
            {"Content-Type": "text/plain"},  # no token
            {"Content-Type": "text/plain", "Authorization": f"Bearer {token}"},  # a simple request, even with it
            {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {token}"},
            {"Content-Type": "application/toml", "Origin": "http://evil.example", "Authorization": f"Bearer {token}"},
            {"Content-Type": "application/toml", "Sec-Fetch-Site": "cross-site", "Authorization": f"Bearer {token}"},
            {"Content-Type": "application/toml", "Host": "attacker.example", "Authorization": f"Bearer {token}"},
        ]
        for headers in cases:
            status, answer = raw(url, "POST", "/api/plans", headers, RCE)
            assert status in (401, 403, 415), (headers, status, answer)
            assert "error" in answer
        status, answer = raw(url, "POST", "/api/plans", {"Content-Type": "application/toml",
                                                         "Authorization": f"Bearer {token}"}, RCE)
        assert status == 400 and "--allow-code" in answer["error"], answer  # the owner, without --allow-code
        assert {p["name"] for p in api(url)[1]["plans"]} == {"slow", "other"}
        assert not (workdir / "pwned.txt").exists() and not (workdir / "data" / "cmd.jsonl").exists()


def test_a_foreign_host_is_refused_everywhere_and_loopback_names_are_not(workdir):
    with daemon(workdir) as (_, url):
        token = TOKENS[url]
        for path in ("/api/plans", "/healthz", "/", "/metrics"):
            status, answer = raw(url, "GET", path, {"Host": "attacker.example:8737", "Authorization": f"Bearer {token}"})
            assert status == 403 and "Host" in answer["error"], (path, answer)
        port = urllib.parse.urlsplit(url).port
        assert raw(url, "GET", "/api/plans", {"Host": f"localhost:{port}", "Authorization": f"Bearer {token}"}
                   )[0] == 200
        status, answer = raw(url, "OPTIONS", "/api/plans", {"Origin": "http://evil.example",
                                                            "Access-Control-Request-Method": "POST"})
        assert status == 403  # no preflight is ever granted


def test_no_token_no_answer_but_health_and_the_page(workdir):
    with daemon(workdir) as (_, url):
        for method, path in (("GET", "/api/plans"), ("GET", "/api/plans/slow"), ("GET", "/api/vendors"),
                             ("GET", "/api/events"), ("GET", "/metrics"), ("POST", "/api/plans/slow/pause"),
                             ("DELETE", "/api/plans/slow"), ("PUT", "/api/workers"), ("POST", "/api/reload")):
            status, answer = api(url, method, path, body={} if method != "GET" else None, token="")
            assert status == 401 and "token" in answer["error"], (method, path, answer)
        assert plan(url, "slow")["state"] == "running"
        assert raw(url, "GET", "/healthz", {})[0] == 200
        status, page = raw(url, "GET", "/", {})
        assert status == 200 and "<html" in page["text"] and TOKENS[url] not in page["text"]


def test_metrics_follow_the_token_unless_public(workdir):
    with daemon(workdir) as (_, url):
        assert raw(url, "GET", "/metrics", {})[0] == 401
        assert raw(url, "GET", "/metrics", {"Authorization": f"Bearer {TOKENS[url]}"})[0] == 200
    with daemon(workdir, "--metrics-public") as (_, url):
        status, answer = raw(url, "GET", "/metrics", {})
        assert status == 200 and "synctask_workers" in answer["text"]
        assert raw(url, "GET", "/api/plans", {})[0] == 401


def test_the_runtime_file_is_the_users_alone_and_the_commands_use_it(workdir):
    with daemon(workdir) as (proc, url):
        folder = workdir / "runtime"
        (found,) = folder.glob("daemon-*.json")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(found.stat().st_mode) == 0o600
        info = json.loads(found.read_text())
        assert info["url"] == url and info["token"] == TOKENS[url] and info["pid"] == proc.pid
        shown = client(workdir, url, "status")
        assert shown.returncode == 0 and "slow" in shown.stdout, shown.stderr
        alone = client(workdir, url, "pause", "slow")  # --url given: the token still comes from the file
        assert alone.returncode == 0 and alone.stdout.strip() == "slow: paused", alone.stderr
        # Without --url: the one daemon running is found by itself.
        import subprocess
        import sys

        from .served import env_for
        found_it = subprocess.run([sys.executable, "-m", "synctask.cli", "status", "slow", "--json"],
                                  capture_output=True, text=True, timeout=60, env=env_for(workdir))
        assert found_it.returncode == 0 and json.loads(found_it.stdout)["state"] == "paused", found_it.stderr
    assert not list((workdir / "runtime").glob("daemon-*.json"))  # removed when the daemon stops


def test_plans_over_the_api_write_only_in_the_data_folder_and_run_code_only_when_allowed(workdir):
    outside = Path(os.path.relpath("/tmp/synctask-escape.jsonl", workdir))
    escapes = ["/etc/synctask-owned.jsonl", "../../escape.jsonl", str(outside)]
    (workdir / "link").symlink_to("/tmp")
    escapes.append("link/escaped.jsonl")  # a symlink out of the folder is outside too
    with daemon(workdir) as (_, url):
        for path in escapes:
            doc = {"datasets": {"esc": {"vendor": "local", "api": "python:serve_tasks:fetch",
                                        "sink": {"kind": "jsonl", "path": path, "key": ["i"]}}}}
            status, answer = api(url, "POST", "/api/plans", doc)
            assert status == 400, answer
            wheres = {p["where"] for p in answer["problems"]}
            assert "datasets.esc.sink.path" in wheres and "datasets.esc.api" in wheres, answer
        inside = {"datasets": {"fine": {"vendor": "local", "sink": {"kind": "jsonl", "path": "data/fine.jsonl",
                                                                     "key": ["i"]}}},
                  "plans": [{"name": "fine", "dataset": "fine", "params": {"i": [1, 2]}}]}
        status, answer = api(url, "POST", "/api/plans", inside)
        assert status == 201, answer  # the file's vendor may run its code: the owner wrote it
    with daemon(workdir, "--allow-code") as (_, url):
        doc = {"datasets": {"esc": {"vendor": "local", "api": "python:serve_tasks:fetch",
                                    "sink": {"kind": "jsonl", "path": "../../escape.jsonl", "key": ["i"]}}}}
        assert api(url, "POST", "/api/plans", doc)[0] == 201
