"""Limits hold under real conditions: the vendor (the simulator, in its own process) stamps each
request up to 50 ms after reading it and drops connections, while two other processes keep both
cores busy. It never counts a request over its limit, and it receives exactly the requests the
limiter admitted: none re-sent behind the limiter's back."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from synctask import SyncTaskExecutor, parse_plan_text

LIMIT = 50  # per sliding second
ITEMS = 250

SERVER = f'''
import asyncio, sys
from synctask.simulator import Faults, Simulator, SimulatorConfig

faults = Faults.parse(sys.argv[1])
config = SimulatorConfig("rest", scale=60, rest_per_minute={LIMIT}, rest_sliding=True, rest_rate_headers=False,
                         rest_items_per_day=1, rest_ban_after=20, faults=faults)

async def main():
    async with Simulator(config) as sim:
        print(sim.port, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
'''

PLAN = """
[vendors.api]
connector = "rest"
base_url = "{url}"
limits = [{{ rate = {limit}, per = "1s" }}]

[datasets.items]
vendor = "api"
options = {{ path = "/v1/items", query = {{ day = "{{i}}", page_size = "1" }}, records = "data.items" }}

[[plans]]
name = "items"
dataset = "items"
params = {{ i = {{ from = 1, to = {items} }} }}
retry = {{ attempts = 10, backoff = "0.05s..1s" }}
timeout = "10s"
"""


@pytest.fixture
def busy_cores() -> Iterator[None]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def vendor(faults: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, faults], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_admin/stats", timeout=10) as answer:
        return json.loads(answer.read())


@pytest.mark.parametrize("faults", [
    "latency=5ms..20ms,stamp=0ms..50ms",             # a vendor that counts late
    "latency=5ms..20ms,stamp=0ms..20ms,drop=0.05",   # ...and drops connections
])
def test_the_vendor_never_counts_one_over_and_receives_only_what_was_admitted(busy_cores, faults):
    server, url = vendor(faults)
    try:
        async def go():
            with tempfile.TemporaryDirectory() as folder:
                executor = SyncTaskExecutor(workers=16, base_dir=Path(folder))
                executor.load(parse_plan_text(PLAN.format(url=url, limit=LIMIT, items=ITEMS), "plans.toml", {}))
                summary = await executor.run()
                admitted = executor.scheduler.stats("items").dispatched
                executor.close()
                return summary, admitted

        summary, admitted = asyncio.run(go())
        seen = stats(url)
    finally:
        server.kill()
        server.communicate()
    assert summary.plans["items"]["done"] == ITEMS
    assert seen["violations"] == [], f"{len(seen['violations'])} requests over the limit"
    assert seen["served"] == admitted, "every request the vendor received was admitted, once"
    if "drop" in faults:
        assert seen["faults"].get("drop", 0) > 0, "connections were dropped"
