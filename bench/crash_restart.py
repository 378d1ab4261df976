"""Limits across a crash: `synctask run` (or `serve`, or a Ray master) killed with -9 at a random
instant, then the same command again at once, against a strict vendor (the simulator in its own
process, 429 past its limit).

The vendor counts what it received in every window; any request past its limit is a violation.
A restarted process must know what its predecessor sent, saved or not (its lease), so the
vendor sees 0 violations in every trial. Prints, per window kind, the trials with violations
and the worst count, and how long the restarted process waited before its first request.

    python bench/crash_restart.py [--trials 20] [--windows sliding,clock,ten] [--mode run|serve|ray]

(sliding: 50 per sliding second; clock: 50 per clock second; ten: 100 per sliding 10 s.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SIMULATOR = '''
import asyncio, sys
from synctask.simulator import Simulator, SimulatorConfig

async def main():
    window = sys.argv[1]  # sliding: 50 per sliding 1 s; clock: 50 per clock 1 s; ten: 100 per sliding 10 s
    config = SimulatorConfig("rest", scale=6 if window == "ten" else 60, rest_per_minute=100 if window == "ten" else 50,
                             rest_sliding=window != "clock", rest_items_per_day=5, rest_rate_headers=False)
    async with Simulator(config) as sim:
        print(sim.url, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
'''

PLANS = '''
[vendors.strict]
connector = "rest"
base_url = "{url}"
limits = [{{ {limit} }}]

[datasets.items]
vendor = "strict"
sink = {{ kind = "sqlite", path = "items.db", key = ["id"] }}
options = {{ path = "/v1/items", query = {{ day = "{{day}}", page_size = "10" }}, records = "data.items" }}

[[plans]]
name = "items"
dataset = "items"
params = {{ day = {{ from = "2000-01-01", to = "2030-12-31" }} }}
retry = {{ attempts = 3, backoff = "0.05s..0.2s" }}
'''


COMMANDS = {"run": ["run", "plans.toml", "--plain"], "serve": ["serve", "plans.toml", "--port", "0"],
            "ray": ["run", "plans.toml", "--plain", "--ray", "local"]}
STARTUP = {"run": (1.5, 3.5), "serve": (1.5, 3.5), "ray": (12.0, 16.0)}  # when the kill comes: sending by then


def trial(window: str, seed: int, mode: str = "run") -> dict[str, float]:
    """One kill -9 and immediate restart; the vendor's violations and the restart's first wait."""
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix="synctask-crash-"))
    sim = subprocess.Popen([sys.executable, "-c", SIMULATOR, window], stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().strip()
        limit = {"sliding": 'rate = 50, per = "1s"', "clock": 'rate = 50, per = "1s", window = "clock"',
                 "ten": 'rate = 100, per = "10s"'}[window]
        (folder / "plans.toml").write_text(PLANS.format(url=url, limit=limit))
        command = [sys.executable, "-m", "synctask.cli", *COMMANDS[mode]]
        env = {**os.environ, "SYNCTASK_RUNTIME_DIR": str(folder / "runtime")}  # a killed daemon's file stays here
        first = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True, env=env)
        time.sleep(rng.uniform(*STARTUP[mode]))
        first.send_signal(signal.SIGKILL)
        first.wait()
        if mode == "ray":  # the master is gone; its Ray workers die with their raylet, not at once
            os.killpg(first.pid, signal.SIGKILL)
        served_before = _stats(url)["served"]
        restarted = time.monotonic()
        second = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True, env=env)
        waited = None
        deadline = time.monotonic() + (15.0 if window == "ten" else 6.0) + (12.0 if mode == "ray" else 0.0)
        while time.monotonic() < deadline:
            if waited is None and _stats(url)["served"] > served_before:
                waited = time.monotonic() - restarted
            time.sleep(0.02)
        second.send_signal(signal.SIGINT)
        try:
            second.wait(60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(second.pid, signal.SIGKILL)
        stats = _stats(url)
        return {"violations": len(stats["violations"]), "served": stats["served"],
                "first_wait": waited if waited is not None else float("nan")}
    finally:
        sim.terminate()
        sim.wait()
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def _stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/_admin/stats", timeout=10) as answer:
        return json.loads(answer.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--windows", default="sliding,clock,ten")
    parser.add_argument("--mode", default="run", choices=sorted(COMMANDS))
    parser.add_argument("--json", action="store_true", help="one JSON line of results (for the tests)")
    args = parser.parse_args()
    results = {}
    for window in args.windows.split(","):
        runs = [trial(window, seed, args.mode) for seed in range(args.trials)]
        results[window] = runs
        if not args.json:
            bad = [r for r in runs if r["violations"]]
            waits = sorted(r["first_wait"] for r in runs)
            worst = max((r["violations"] for r in runs), default=0)
            print(f"{args.mode:5} {window:8} {args.trials} trials: {len(bad)} with violations (worst {worst}), "
                  f"restart's first request after {waits[len(waits) // 2]:.2f} s (median), "
                  f"{sum(r['served'] for r in runs) / len(runs):,.0f} requests served per trial")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
