"""Memory: peak RSS of whole runs of no-op tasks, 10k to 10M, each size in a fresh process.

Plain asyncio (one task per item under a semaphore, gathered) next to the executor with the
SQLite store (the default for real runs) and with the memory store. The plan is expanded
lazily, progress keeps a bounded window and SQLite keeps the outcomes on disk, so the
executor's memory should stay flat past the first million tasks (goal: < 10 MB per million).
The memory store keeps every done task's digest (about 85 bytes each, its docstring says).

    python bench/executor_memory.py [--sizes 10000,100000,1000000,10000000] [--memory-max 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synctask import Dataset, MemoryStore, ParamGrid, SQLiteStore, SyncPlan, SyncTaskExecutor, Vendor, parse_schedule


async def noop(**_: object) -> None:
    return None


async def plain(tasks: int, workers: int) -> int:
    semaphore = asyncio.Semaphore(workers)

    async def one(i: int) -> None:
        async with semaphore:
            await noop(i=i)

    await asyncio.gather(*(one(i) for i in range(tasks)))
    return tasks


async def executor(tasks: int, workers: int, store: object) -> int:
    ex = SyncTaskExecutor(workers=workers, store=store)  # type: ignore[arg-type]
    ex.add_vendor(Vendor("v", "python"))
    ex.add_dataset(Dataset("d", "v", "d"), fetch=noop)
    inner = min(tasks, 1000)
    grid = ParamGrid.from_spec({"symbol": {"from": 1, "to": tasks // inner}, "day": {"from": 1, "to": inner}})
    ex.add_plan(SyncPlan("big", "d", grid, parse_schedule("manual")))
    summary = await ex.run()
    ex.close()
    return int(summary.plans["big"]["done"])


def child(kind: str, tasks: int, workers: int) -> None:
    """One run in this process; prints its figures as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        started, cpu = time.perf_counter(), time.process_time()
        if kind == "plain":
            done = asyncio.run(plain(tasks, workers))
        else:
            store = MemoryStore() if kind == "memory" else SQLiteStore(Path(tmp) / "state.db")
            done = asyncio.run(executor(tasks, workers, store))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert done == tasks, (done, tasks)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"kind": kind, "tasks": tasks, "peak_mb": peak, "wall": wall, "cpu": cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000")
    parser.add_argument("--memory-max", type=int, default=1_000_000, help="largest run for plain and memory")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "TASKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.workers)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'run':10} {'tasks':>11} {'peak RSS MB':>12} {'wall s':>8} {'cpu s':>8} {'tasks/cpu-s':>12}")
    for kind in ("plain", "memory", "sqlite"):
        peaks: dict[int, float] = {}
        for tasks in sizes:
            if kind != "sqlite" and tasks > args.memory_max:
                continue
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(tasks), "--workers",
                                  str(args.workers)], capture_output=True, text=True, check=True).stdout
            row = json.loads(out.splitlines()[-1])
            peaks[tasks] = row["peak_mb"]
            print(f"{kind:10} {tasks:>11,} {row['peak_mb']:>12.1f} {row['wall']:>8.1f} {row['cpu']:>8.1f} "
                  f"{tasks / row['cpu']:>12,.0f}", flush=True)
        big = [t for t in sorted(peaks) if t >= 1_000_000]
        if len(big) >= 2:
            first, last = big[0], big[-1]
            growth = (peaks[last] - peaks[first]) / ((last - first) / 1_000_000)
            print(f"{kind:10} growth past the first million: {growth:.1f} MB per million tasks")


if __name__ == "__main__":
    main()
