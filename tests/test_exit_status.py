"""Honest exit statuses in real processes: a run in which any task failed exits 1 and says how
many failed, whatever the vendor did wrong (no server, HTML, garbage, no answer, 401/403)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

PLANS = """
[vendors.api]
connector = "{connector}"
base_url = "{url}"
token = {{ env = "API_TOKEN" }}

[datasets.items]
vendor = "api"
api = "daily"
{options}
sink = {{ kind = "jsonl", path = "items.jsonl", key = ["id"] }}

[[plans]]
name = "items"
dataset = "items"
params = {{ i = {{ from = 1, to = 3 }} }}
timeout = "1s"
retry = {{ attempts = 2, backoff = "0.05s..0.1s" }}
"""


class _Handler(BaseHTTPRequestHandler):
    mode = "html"

    def _answer(self) -> None:
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "hang":
            self.server.hung.wait(10)  # type: ignore[attr-defined]
            return
        status, body, kind = {
            "html": (200, b"<html><body>Maintenance</body></html>", "text/html"),
            "garbage": (200, b"\x00\x17not json at all{{{", "application/json"),
            "401": (401, b'{"error": "unauthorized"}', "application/json"),
            "403": (403, b'{"error": "forbidden"}', "application/json"),
        }[mode]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def vendor() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.hung = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.hung.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def run(tmp_path, url: str, connector: str = "rest") -> subprocess.CompletedProcess[str]:
    path = tmp_path / "plans.toml"
    options = ('options = { path = "/v1/items", query = { day = "{i}" }, records = "data" }'
               if connector == "rest" else "")
    path.write_text(PLANS.format(url=url, connector=connector, options=options))
    env = {**os.environ, "API_TOKEN": "tok-SECRET-4242"}
    return subprocess.run([sys.executable, "-m", "synctask.cli", "run", str(path), "--plain"],
                          capture_output=True, text=True, env=env, timeout=90)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_failed_honestly(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "tok-SECRET-4242" not in result.stdout + result.stderr


def test_an_unreachable_vendor_exits_1(tmp_path):
    result = run(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert_failed_honestly(result)
    assert "completed with 3 failed" in result.stdout
    assert "3 task(s) failed" in result.stderr


@pytest.mark.parametrize("mode", ["html", "garbage", "hang"])
def test_a_vendor_that_answers_nonsense_or_nothing_exits_1(tmp_path, vendor, mode):
    vendor.mode = mode  # type: ignore[attr-defined]
    result = run(tmp_path, f"http://127.0.0.1:{vendor.server_port}")
    assert_failed_honestly(result)
    assert "completed with 3 failed" in result.stdout


@pytest.mark.parametrize("status", ["401", "403"])
@pytest.mark.parametrize("connector", ["rest", "tushare"])
def test_refused_credentials_stop_the_plan_and_exit_1(tmp_path, vendor, status, connector):
    vendor.mode = status  # type: ignore[attr-defined]
    result = run(tmp_path, f"http://127.0.0.1:{vendor.server_port}", connector)
    assert_failed_honestly(result)
    assert " failed " in result.stdout  # the plan's state: failed (fatal), not completed
    assert "completed" not in result.stdout


def test_an_unreachable_vendor_is_frozen_and_said_at_once(tmp_path):
    import json as _json

    path = tmp_path / "plans.toml"
    text = PLANS.format(url=f"http://127.0.0.1:{free_port()}", connector="rest",
                        options='options = { path = "/v1/items", query = { day = "{i}" }, records = "data" }')
    path.write_text(text.replace("to = 3", "to = 40").replace('attempts = 2, backoff = "0.05s..0.1s"',
                                                              'attempts = 3, backoff = "0.05s..0.1s"'))
    env = {**os.environ, "API_TOKEN": "x"}
    proc = subprocess.Popen([sys.executable, "-m", "synctask.cli", "run", str(path), "--json", "--workers", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        started = None
        for line in proc.stdout:
            event = _json.loads(line)
            started = started or event["at"]
            if event["type"] == "freeze":
                break
        else:
            raise AssertionError("no freeze")
    finally:
        proc.kill()
        proc.communicate()
    assert event["scope"] == "vendor:api" and event["message"].startswith("cannot reach the vendor: 5 connection")
    assert "froze vendor:api for 10s" in event["message"]
    assert event["at"] - started < 5.0, "said within seconds, not after every task's retries"
