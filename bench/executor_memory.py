"""Memory: peak RSS of the executor running a 1,000,000- and a 10,000,000-task plan for 30 s.

No-op Python tasks, 64 workers, the SQLite store (the default for real runs). The plan is
expanded lazily, so memory should follow the work in flight, not the plan's size.

    python bench/executor_memory.py [--tasks 1000000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
from pathlib import Path

from synctask import Dataset, ParamGrid, SQLiteStore, SyncPlan, SyncTaskExecutor, Vendor, parse_schedule


async def noop(**_: object) -> None:
    return None


async def main_async(tasks: int, seconds: float, state: Path) -> dict:
    ex = SyncTaskExecutor(workers=64, store=SQLiteStore(state))
    ex.add_vendor(Vendor("v", "python"))
    ex.add_dataset(Dataset("d", "v", "d"), fetch=noop)
    inner = 1000
    grid = ParamGrid.from_spec({"symbol": {"from": 1, "to": tasks // inner}, "day": {"from": 1, "to": inner}})
    ex.add_plan(SyncPlan("big", "d", grid, parse_schedule("manual")))
    runner = asyncio.create_task(ex.run())
    await asyncio.sleep(seconds)
    ex.shutdown()
    summary = await runner
    ex.close()
    return summary.plans["big"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stats = asyncio.run(main_async(args.tasks, args.seconds, Path(tmp) / "state.db"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"plan of {args.tasks:,} tasks, {args.seconds:g} s: {stats['done']:,} done; peak RSS {peak:.1f} MB")


if __name__ == "__main__":
    main()
