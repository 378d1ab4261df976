"""Dispatch of ``synctask serve`` with its event stream open: 10 SSE subscribers vs none.

A daemon (its own process) runs no-op Python tasks as fast as it can; the benchmark counts the
tasks done over a few seconds, first with nobody following ``/api/events``, then with 10
subscribers reading it (threads of this process), then again with none. Goal: >= 0.9x with
the dashboard's stream (the default: progress snapshots, failures, freezes, plan changes);
``--tasks`` follows every task's start and end instead.

    python bench/serve_sse.py [--seconds 5] [--subscribers 10] [--tasks]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request

from serve_daemon import daemon

TASKS = '''
async def fetch(i):
    return None
'''

PLANS = '''
[vendors.local]
connector = "python:sse_tasks:fetch"

[datasets.work]
vendor = "local"
api = "python:sse_tasks:fetch"

[[plans]]
name = "work"
dataset = "work"
params = { i = { from = 1, to = 100000000 } }
'''


def done(url: str) -> int:
    with urllib.request.urlopen(f"{url}/api/plans/work", timeout=10) as answer:
        return int(json.loads(answer.read())["done"])


def rate(url: str, seconds: float) -> float:
    before, started = done(url), time.perf_counter()
    time.sleep(seconds)
    return (done(url) - before) / (time.perf_counter() - started)


def follow(url: str, stop: threading.Event, counts: list[int], path: str) -> None:
    with urllib.request.urlopen(f"{url}{path}", timeout=30) as stream:
        for line in stream:
            if line.startswith(b"data: "):
                counts.append(1)
            if stop.is_set():
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--tasks", action="store_true", help="follow ?tasks=all (every task's start and end)")
    args = parser.parse_args()
    path = "/api/events?tasks=all" if args.tasks else "/api/events"
    with daemon("sse_tasks", TASKS, PLANS) as (url, _):
        alone = rate(url, args.seconds)
        stop, counts = threading.Event(), []
        readers = [threading.Thread(target=follow, args=(url, stop, counts, path), daemon=True)
                   for _ in range(args.subscribers)]
        for reader in readers:
            reader.start()
        time.sleep(0.5)
        watched = rate(url, args.seconds)
        stop.set()
        time.sleep(1.0)
        again = rate(url, args.seconds)
    base = (alone + again) / 2
    print(f"no subscriber: {alone:,.0f} then {again:,.0f} tasks/s; {args.subscribers} SSE subscribers of {path}: "
          f"{watched:,.0f} tasks/s = {watched / base:.2f}x ({len(counts):,} event batches delivered)")


if __name__ == "__main__":
    main()
