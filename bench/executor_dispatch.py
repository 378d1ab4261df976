"""Dispatch: 100,000 no-op Python tasks through the executor vs plain asyncio, in one run.

Plain asyncio is what a user writes by hand: one task per item under a semaphore of the same
width. The executor does everything it always does (scheduling, limiter, state transitions,
events, progress, the store), with the in-memory store and with SQLite.

    python bench/executor_dispatch.py [--tasks 100000] [--workers 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from synctask import Dataset, MemoryStore, ParamGrid, SQLiteStore, SyncPlan, SyncTaskExecutor, Vendor, parse_schedule


async def noop(i: int) -> None:
    return None


async def plain(tasks: int, workers: int) -> float:
    semaphore = asyncio.Semaphore(workers)

    async def one(i: int) -> None:
        async with semaphore:
            await noop(i)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(tasks)))
    return time.perf_counter() - start


async def executor(tasks: int, workers: int, store) -> float:
    ex = SyncTaskExecutor(workers=workers, store=store)
    ex.add_vendor(Vendor("v", "python"))
    ex.add_dataset(Dataset("d", "v", "d"), fetch=noop)
    plan = SyncPlan("p", "d", ParamGrid.from_spec({"i": {"from": 1, "to": tasks}}), parse_schedule("manual"))
    start = time.perf_counter()
    ex.add_plan(plan)
    summary = await ex.run()
    took = time.perf_counter() - start
    ex.close()
    assert summary.plans["p"]["done"] == tasks, summary
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--mode", choices=["all", "plain", "memory", "sqlite"], default="all",
                        help="one variant only (to time whole processes against each other)")
    args = parser.parse_args()
    if args.mode != "all":
        if args.mode == "plain":
            took = asyncio.run(plain(args.tasks, args.workers))
        elif args.mode == "memory":
            took = asyncio.run(executor(args.tasks, args.workers, MemoryStore()))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                took = asyncio.run(executor(args.tasks, args.workers, SQLiteStore(Path(tmp) / "state.db")))
        print(f"{args.mode}: {args.tasks / took:,.0f} tasks/s ({took:.2f} s)")
        return
    base = asyncio.run(plain(args.tasks, args.workers))
    print(f"plain asyncio + semaphore: {args.tasks / base:10,.0f} tasks/s ({base:.2f} s)")
    mem = asyncio.run(executor(args.tasks, args.workers, MemoryStore()))
    print(f"executor, memory store:    {args.tasks / mem:10,.0f} tasks/s ({mem:.2f} s)  = {base / mem:.2f}x plain")
    with tempfile.TemporaryDirectory() as tmp:
        sql = asyncio.run(executor(args.tasks, args.workers, SQLiteStore(Path(tmp) / "state.db")))
    print(f"executor, SQLite store:    {args.tasks / sql:10,.0f} tasks/s ({sql:.2f} s)  = {base / sql:.2f}x plain")


if __name__ == "__main__":
    main()
