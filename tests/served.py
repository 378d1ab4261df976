"""Helpers for tests of `synctask serve`: a daemon in a subprocess, its API, its client commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TASK_MODULE = '''
import asyncio

async def fetch(i):
    await asyncio.sleep(0.02)
    return [{"i": i}]
'''

PLANS = '''
[vendors.local]
connector = "python:serve_tasks:fetch"
limits = [{ rate = 100, per = "1s" }]

[datasets.slow]
vendor = "local"
api = "python:serve_tasks:fetch"
sink = { kind = "sqlite", path = "slow.db", key = ["i"] }

[datasets.other]
vendor = "local"
api = "python:serve_tasks:fetch"
sink = { kind = "sqlite", path = "other.db", key = ["i"] }

[[plans]]
name = "slow"
dataset = "slow"
params = { i = { from = 1, to = 100000 } }

[[plans]]
name = "other"
dataset = "other"
params = { i = { from = 1, to = 100000 } }
'''


# A plan that runs a shell command: what a page of another site must never get the daemon to add.
RCE = '''
[vendors.py]
connector = "python:os:system"
[datasets.cmd]
vendor = "py"
api = "python:os:system"
sink = { kind = "jsonl", path = "data/cmd.jsonl", key = ["command"] }
[[plans]]
name = "rce"
dataset = "cmd"
params = { command = ["id > pwned.txt"] }
'''


def make_workdir(tmp_path: Path) -> Path:
    """A folder with the plan file and the Python tasks the daemon runs."""
    (tmp_path / "serve_tasks.py").write_text(TASK_MODULE)
    (tmp_path / "plans.toml").write_text(PLANS)
    return tmp_path


TOKENS: dict[str, str] = {}  # each test daemon's token, by its URL (the daemon prints it once)


def env_for(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a daemon and its client commands: runtime files in the test's folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("SYNCTASK_API_TOKEN", "SYNCTASK_URL")}
    return {**env, "PYTHONPATH": str(workdir), "SYNCTASK_RUNTIME_DIR": str(workdir / "runtime"), **extra}


@contextmanager
def daemon(workdir: Path, *args: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`synctask serve` on a free port; yields the process and the API's URL."""
    proc = subprocess.Popen([sys.executable, "-m", "synctask.cli", "serve", str(workdir / "plans.toml"),
                             "--port", "0", *args], cwd=workdir, env=env_for(workdir, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "control API on http://" in line, line + (proc.stderr.read() if proc.stderr else "")
        url = line.split("control API on ")[1].split()[0]
        dashboard = proc.stdout.readline()
        assert "open the dashboard at" in dashboard, dashboard
        TOKENS[url] = env.get("SYNCTASK_API_TOKEN") or dashboard.split("#token=")[1].strip()
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def api(url: str, method: str = "GET", path: str = "/api/plans", body: object = None,
        token: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One call with the daemon's own token (``token`` for another one, ``""`` for none)."""
    token = TOKENS.get(url) if token is None else token
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def opened(url: str, path: str, timeout: float = 10):
    """``urlopen`` of a GET with the daemon's token (a stream or a text answer)."""
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {TOKENS[url]}"})
    return urllib.request.urlopen(request, timeout=timeout)


def client(workdir: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synctask.cli", *args, "--url", url], capture_output=True,
                          text=True, timeout=60, env=env_for(workdir, **env))


def plan(url: str, name: str) -> dict:
    status, view = api(url, path=f"/api/plans/{name}")
    assert status == 200, view
    return view


def wait_until(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
