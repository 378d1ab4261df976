"""Dispatch: 100,000 no-op Python tasks through the executor vs plain asyncio, in one run.

Plain asyncio is what a user writes by hand: one task per item under a semaphore of the same
width. The executor does everything it always does (scheduling, limiter, state transitions,
events, progress, the store), with the in-memory store and with SQLite.

    python bench/executor_dispatch.py [--tasks 100000] [--workers 64] [--repeat 3]

The ratio to plain asyncio is taken per CPU-second, round by round (the rounds alternate the
three variants, so a noisy neighbour affects them alike).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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


def timed(mode: str, tasks: int, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds (every thread: the SQLite store writes on its own) of one run."""
    cpu = time.process_time()
    if mode == "plain":
        took = asyncio.run(plain(tasks, workers))
    elif mode == "memory":
        took = asyncio.run(executor(tasks, workers, MemoryStore()))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            took = asyncio.run(executor(tasks, workers, SQLiteStore(Path(tmp) / "state.db")))
    return took, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of plain, memory, SQLite in turn")
    parser.add_argument("--modes", default="plain,memory,sqlite")
    args = parser.parse_args()
    modes = args.modes.split(",")
    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for _ in range(args.repeat):
        for mode in modes:
            runs[mode].append(timed(mode, args.tasks, args.workers))
    print(f"{args.tasks:,} no-op tasks, {args.workers} workers, {args.repeat} rounds (min / median / max)")
    print(f"{'':10} {'tasks/s wall':>30} {'tasks per CPU-second':>30} {'x plain (CPU)':>22}")
    for mode in modes:
        walls = sorted(args.tasks / wall for wall, _ in runs[mode])
        cpus = sorted(args.tasks / cpu for _, cpu in runs[mode])
        line = f"{mode:10} {_three(walls):>30} {_three(cpus):>30}"
        if mode != "plain" and "plain" in runs:
            ratios = sorted(p[1] / m[1] for p, m in zip(runs["plain"], runs[mode], strict=True))
            line += f" {_three(ratios, '.2f'):>22}"
        print(line)


def _three(values: list[float], spec: str = ",.0f") -> str:
    return " / ".join(format(v, spec) for v in (values[0], statistics.median(values), values[-1]))


if __name__ == "__main__":
    main()
