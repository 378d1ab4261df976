"""Resuming a finished plan: does skipping its done tasks hold up anything else?

A first run finishes N no-op tasks with the SQLite store. A second run starts the same plan (all N
done) beside a fresh plan of 20 tasks, while a ticker measures how long the event loop went
without running anything else. Printed: when the fresh plan's first task went out, the longest
stall of the loop (what a Ctrl-C or a control op would wait), the skip rate, in wall and
CPU seconds.

    python bench/resume_skip.py                 # 200,000 done tasks
    python bench/resume_skip.py --tasks 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from synctask import (
    Dataset,
    ParamGrid,
    RetryPolicy,
    SQLiteStore,
    SyncPlan,
    SyncTaskExecutor,
    TaskEvent,
    Vendor,
    parse_schedule,
)


async def noop(i: int) -> None:
    return None


def executor(state: Path, plans: dict[str, int]) -> SyncTaskExecutor:
    ex = SyncTaskExecutor(workers=64, store=SQLiteStore(state))
    ex.add_vendor(Vendor("v", "python"))
    for name, n in plans.items():
        ex.add_dataset(Dataset(name, "v", name), fetch=noop)
        ex.add_plan(SyncPlan(name, name, ParamGrid.from_spec({"i": {"from": 0, "to": n - 1}}),
                             parse_schedule("manual"), retry=RetryPolicy()))
    return ex


async def resume(state: Path, tasks: int) -> dict[str, float]:
    ex = executor(state, {"old": tasks, "fresh": 20})
    loop = asyncio.get_running_loop()
    started = 0.0
    first: list[float] = []
    ex.listen(lambda e: first.append(loop.time() - started)
              if isinstance(e, TaskEvent) and e.plan == "fresh" and e.kind == "started" and not first else None)
    stall = 0.0
    done = False

    async def ticker() -> None:
        nonlocal stall
        last = loop.time()
        while not done:
            await asyncio.sleep(0.001)
            now = loop.time()
            stall = max(stall, now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.005)  # the ticker is running before the run's first dispatch
    started = loop.time()
    cpu = time.process_time()
    summary = await ex.run()
    cpu = time.process_time() - cpu
    done = True
    await tick
    took = loop.time() - started
    ex.close()
    assert summary.plans["old"]["skipped"] == tasks, summary.plans["old"]
    return {"first": first[0], "stall": stall, "wall": took, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "state.db"
        ex = executor(state, {"old": args.tasks})
        asyncio.run(ex.run())
        ex.close()
        got = asyncio.run(resume(state, args.tasks))
    print(f"resume over {args.tasks:,} done tasks beside a fresh plan (SQLite store):")
    print(f"  fresh plan's first task went out after {got['first'] * 1000:.1f} ms")
    print(f"  longest event-loop stall {got['stall'] * 1000:.1f} ms (what Ctrl-C or a control op waits at most)")
    print(f"  skipped {args.tasks / got['wall']:,.0f} tasks per second ({args.tasks / got['cpu']:,.0f} per CPU-second)")


if __name__ == "__main__":
    main()
