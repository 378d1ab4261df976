"""Decision cost: scheduler + limiter decisions per CPU-second, from 1 to 10,000 datasets.

N tasks over D datasets (one plan each), each dataset under its own sliding limit and all under
one vendor limit, driven with a fake clock, in two ways:

* batch: every admitted task is reported at once, at the same instant (the limiter's windows
  free all together); ``dispatch`` is the time inside ``Scheduler.dispatch`` alone (choosing the
  queue, pulling the task from the lazy grid, the all-scopes reservation), ``full cycle`` adds
  ``Scheduler.report`` for each task (state change, release, requeue);
* spread: 64 workers, each task answered 10 ms after it went out, so the vendor's window frees
  one request at a time, as in real runs; ``tries`` is gate checks per admitted task.

Each count runs in a fresh process. The cost per decision at D datasets is shown against D = 1.

    python bench/decision_cost.py [--tasks 1000000] [--datasets 1,100,1000,10000]
"""

from __future__ import annotations

import argparse
import heapq
import json
import subprocess
import sys
import time

from synctask import Dataset, Limiter, ParamGrid, Quota, RetryPolicy, Scheduler, SyncPlan, Vendor, parse_schedule
from synctask.limits import Gate


def build(tasks: int, datasets: int, vendor_rate: int, dataset_rate: int) -> Scheduler:
    sched = Scheduler(Limiter())
    vendor = Vendor("v", "rest", limits=(Quota(vendor_rate, 1.0),))
    per = tasks // datasets
    for d in range(datasets):
        sched.add_dataset(Dataset(f"d{d}", "v", "api", (Quota(dataset_rate, 1.0), Quota(10_000_000, 86400.0))),
                          vendor)
        plan = SyncPlan(f"p{d}", f"d{d}", ParamGrid.from_spec({"i": {"from": 1, "to": per}}),
                        parse_schedule("manual"), retry=RetryPolicy())
        sched.add_plan(plan)
    return sched


def batch(tasks: int, datasets: int, slots: int = 1_000) -> dict[str, float]:
    sched = build(tasks, datasets, 50_000, 1_000)
    now, done = 0.0, 0
    in_dispatch = in_report = 0.0
    while True:
        t0 = time.process_time()
        decision = sched.dispatch(now, slots)
        t1 = time.process_time()
        for task in decision.tasks:
            sched.report(task, None, now)
        in_dispatch += t1 - t0
        in_report += time.process_time() - t1
        done += len(decision.tasks)
        if not decision.tasks and not sched.has_ready:
            if decision.wake_at is None:
                break
            now = decision.wake_at
    assert done == tasks, done
    return {"dispatch": done / in_dispatch, "cycle": done / (in_dispatch + in_report)}


def spread(tasks: int, datasets: int, workers: int = 64, latency: float = 0.010) -> dict[str, float]:
    sched = build(tasks, datasets, 5_000, 1_000)
    tries = 0
    try_acquire = Gate.try_acquire

    def counted(self: Gate, weight: int, now: float) -> float | None:
        nonlocal tries
        tries += 1
        return try_acquire(self, weight, now)

    Gate.try_acquire = counted  # type: ignore[method-assign]
    flight: list[tuple[float, int, object]] = []
    now, done, order = 0.0, 0, 0
    started = time.process_time()
    while True:
        while flight and flight[0][0] <= now:
            task = heapq.heappop(flight)[2]
            sched.answered(task, now)  # type: ignore[arg-type]
            sched.report(task, None, now)  # type: ignore[arg-type]
            done += 1
        decision = sched.dispatch(now, workers - len(flight))
        for task in decision.tasks:
            order += 1
            heapq.heappush(flight, (now + latency, order, task))
        if decision.tasks and sched.has_ready and len(flight) < workers:
            continue
        times = [t for t in (decision.wake_at, flight[0][0] if flight else None) if t is not None]
        if not times:
            break
        now = max(now, min(times))
    took = time.process_time() - started
    Gate.try_acquire = try_acquire  # type: ignore[method-assign]
    assert done == tasks, done
    return {"cycle": done / took, "tries": tries / done, "fake": now}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--spread-tasks", type=int, default=200_000)
    parser.add_argument("--datasets", default="1,100,1000,10000")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, tasks, datasets = args.child[0], int(args.child[1]), int(args.child[2])
        print(json.dumps(batch(tasks, datasets) if mode == "batch" else spread(tasks, datasets)))
        return
    counts = [int(d) for d in args.datasets.split(",")]
    print(f"batch: {args.tasks:,} tasks, vendor 50,000/s, each dataset 1,000/s; decisions per CPU-second")
    table("batch", args.tasks, counts, ("dispatch", "cycle"))
    print(f"\nspread: {args.spread_tasks:,} tasks, vendor 5,000/s, 64 workers, answers 10 ms after sending")
    table("spread", args.spread_tasks, counts, ("cycle", "tries"))


def table(mode: str, tasks: int, counts: list[int], columns: tuple[str, ...]) -> None:
    """One row per dataset count, each run in a fresh process; the cost is against the first row."""
    names = {"dispatch": "dispatch", "cycle": "full cycle", "tries": "tries/task"}
    print(f"{'datasets':>9} " + " ".join(f"{names[c]:>12}" for c in columns) + f" {'cost vs 1':>10}")
    base = None
    for d in counts:
        out = subprocess.run([sys.executable, __file__, "--child", mode, str(tasks), str(d)],
                             capture_output=True, text=True, check=True).stdout
        got = json.loads(out.splitlines()[-1])
        base = base or got["cycle"]
        cells = " ".join(f"{got[c]:>12.2f}" if c == "tries" else f"{got[c]:>12,.0f}" for c in columns)
        print(f"{d:>9,} {cells} {base / got['cycle']:>9.2f}x")


if __name__ == "__main__":
    main()
