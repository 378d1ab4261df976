"""Control latency of ``synctask serve``: from a pause over the API to that plan's last request.

A daemon (its own process) runs a plan of Python tasks that each log the instant they start;
N times the benchmark pauses the plan over HTTP, waits, finds the last start after the pause
was sent, and resumes it. Printed: p50, p99 and max of pause-to-last-start (a task started just
before the pause took effect counts), and of the API call itself. Goal: p99 < 100 ms.

    python bench/serve_control.py [--trials 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

from serve_daemon import daemon

TASKS = '''
import asyncio, os, time

async def fetch(i):
    with open(os.environ["START_LOG"], "a") as log:
        log.write(f"{time.time()}\\n")
    await asyncio.sleep(0.01)
'''

PLANS = '''
[vendors.local]
connector = "python:control_tasks:fetch"
limits = [{ rate = 2000, per = "1s" }]

[datasets.work]
vendor = "local"
api = "python:control_tasks:fetch"

[[plans]]
name = "work"
dataset = "work"
params = { i = { from = 1, to = 100000000 } }
'''


def post(url: str) -> float:
    started = time.time()
    request = urllib.request.Request(url, data=b"{}", method="POST")  # a change says its body is JSON
    with urllib.request.urlopen(request, timeout=10) as answer:
        json.loads(answer.read())
    return started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    with daemon("control_tasks", TASKS, PLANS, START_LOG="{work}/starts.log") as (url, work):
        log = work / "starts.log"
        to_last, calls = [], []
        for _ in range(args.trials):
            sent = post(f"{url}/api/plans/work/pause")
            calls.append(time.time() - sent)
            time.sleep(0.3)
            starts = [float(line) for line in log.read_text().split()]
            to_last.append(max(0.0, max(starts) - sent))
            post(f"{url}/api/plans/work/resume")
            time.sleep(0.2)
    for name, values in (("pause to the plan's last start", to_last), ("the API call", calls)):
        values.sort()
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        print(f"{name:32} p50 {statistics.median(values) * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  "
              f"max {values[-1] * 1000:6.1f} ms  ({args.trials} trials)")


if __name__ == "__main__":
    main()
