"""Decision cost: scheduler + limiter decisions per second on one core.

1,000,000 tasks over 100 datasets (one plan of 10,000 tasks each), each dataset under its own
sliding limit and all under one vendor limit, driven with a fake clock. Two figures:

* dispatch: tasks admitted per second of time spent inside ``Scheduler.dispatch`` (choosing the
  queue, pulling the task from the lazy grid, the limiter's all-scopes reservation);
* full cycle: the same plus ``Scheduler.report`` for each task (state change, release, requeue),
  i.e. everything the executor asks of the core per task.

    python bench/decision_cost.py [--tasks 1000000] [--datasets 100]
"""

from __future__ import annotations

import argparse
import time

from synctask import Dataset, Limiter, ParamGrid, Quota, RetryPolicy, Scheduler, SyncPlan, Vendor, parse_schedule


def build(tasks: int, datasets: int) -> Scheduler:
    sched = Scheduler(Limiter())
    vendor = Vendor("v", "rest", limits=(Quota(50_000, 1.0),))
    per = tasks // datasets
    for d in range(datasets):
        sched.add_dataset(Dataset(f"d{d}", "v", "api", (Quota(1_000, 1.0), Quota(10_000_000, 86400.0))), vendor)
        plan = SyncPlan(f"p{d}", f"d{d}", ParamGrid.from_spec({"i": {"from": 1, "to": per}}),
                        parse_schedule("manual"), retry=RetryPolicy())
        sched.add_plan(plan)
    return sched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--slots", type=int, default=1_000, help="free worker slots per dispatch")
    args = parser.parse_args()
    sched = build(args.tasks, args.datasets)
    now, done = 0.0, 0
    in_dispatch = in_report = 0.0
    while True:
        t0 = time.perf_counter()
        decision = sched.dispatch(now, args.slots)
        t1 = time.perf_counter()
        for task in decision.tasks:
            sched.report(task, None, now)
        in_dispatch += t1 - t0
        in_report += time.perf_counter() - t1
        done += len(decision.tasks)
        if not decision.tasks and not sched.has_ready:
            if decision.wake_at is None:
                break
            now = decision.wake_at
    assert done == args.tasks, done
    total = in_dispatch + in_report
    print(f"{done:,} tasks over {args.datasets} datasets; fake time at the end {now:.1f} s "
          f"(vendor limit 50,000/s: minimum {args.tasks / 50_000 - 1:.1f} s)")
    print(f"dispatch:   {done / in_dispatch:12,.0f} decisions/s  ({in_dispatch:.2f} s)")
    print(f"full cycle: {done / total:12,.0f} tasks/s      ({total:.2f} s, dispatch + report)")


if __name__ == "__main__":
    main()
