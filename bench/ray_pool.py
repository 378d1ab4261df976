"""No-op tasks through the Ray worker pool, batched: tasks per second on this machine.

Starts a local two-node Ray cluster (``ray.cluster_utils.Cluster``), then runs a plan of no-op
Python tasks through ``SyncTaskExecutor(ray=...)`` with no limit and no sink, and prints tasks
per second after the actors are up (the first run's start-up is reported apart). Goal:
>= 10,000 tasks/s (one Ray call per task here is about 300/s).

    python bench/ray_pool.py [--tasks 50000] [--workers 512]
"""

from __future__ import annotations

import argparse
import asyncio
import time

TASKS = '''
async def noop(i):
    return None
'''

PLANS = '''
[vendors.v]
connector = "python:bench_noop:noop"

[datasets.d]
vendor = "v"
api = "python:bench_noop:noop"

[[plans]]
name = "p"
dataset = "d"
params = {{ i = {{ from = 1, to = {n} }} }}
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=512)
    args = parser.parse_args()
    from ray_cluster import two_nodes

    from synctask import SyncTaskExecutor, parse_plan_text

    started = time.perf_counter()
    with two_nodes("bench_noop", TASKS) as address:
        print(f"cluster of 2 nodes up in {time.perf_counter() - started:.1f} s")
        for label, n in (("warm-up", 2_000), ("measured", args.tasks)):
            ex = SyncTaskExecutor(parse_plan_text(PLANS.format(n=n)), workers=args.workers, ray=address)
            began = time.perf_counter()
            summary = asyncio.run(ex.run())
            took = time.perf_counter() - began
            done = summary.plans["p"]["done"]
            print(f"{label}: {done:,} no-op tasks in {took:.2f} s (actors' start included) = "
                  f"{done / took:,.0f} tasks/s")


if __name__ == "__main__":
    main()
