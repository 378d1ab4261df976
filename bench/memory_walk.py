"""Memory: peak RSS while the scheduler walks a 10,000,000-task plan (goal < 300 MB).

The plan's grid is 10,000 × 1,000 parameters; the scheduler pulls tasks lazily, dispatches them
1,000 at a time and reports each one done, under a generous limit, with a fake clock.

    python bench/memory_walk.py [--tasks 10000000]
"""

from __future__ import annotations

import argparse
import resource
import time

from synctask import Dataset, Limiter, ParamGrid, Quota, Scheduler, SyncPlan, parse_schedule


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000_000)
    args = parser.parse_args()
    inner = 1_000
    outer = args.tasks // inner
    before = peak_rss_mb()
    sched = Scheduler(Limiter())
    sched.add_dataset(Dataset("d", "v", "api", (Quota(100_000, 1.0),)))
    grid = ParamGrid.from_spec({"symbol": {"from": 1, "to": outer}, "day": {"from": 1, "to": inner}})
    sched.add_plan(SyncPlan("walk", "d", grid, parse_schedule("manual")))
    now, done = 0.0, 0
    started = time.perf_counter()
    while True:
        decision = sched.dispatch(now, 1_000)
        for task in decision.tasks:
            sched.report(task, None, now)
        done += len(decision.tasks)
        if not decision.tasks and not sched.has_ready:
            if decision.wake_at is None:
                break
            now = decision.wake_at
    elapsed = time.perf_counter() - started
    stats = sched.stats("walk")
    assert stats.done == args.tasks == done, (stats, done)
    print(f"walked {done:,} tasks in {elapsed:.1f} s ({done / elapsed:,.0f}/s)")
    print(f"peak RSS {peak_rss_mb():.1f} MB (after imports {before:.1f} MB)")


if __name__ == "__main__":
    main()
