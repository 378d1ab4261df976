"""Cancel latency: from ``stop_plan`` to all of the plan's 1,000 in-flight tasks cancelled.

Each trial starts a plan of 1,000 tasks that would each take an hour, waits until all 1,000 are
in flight, calls ``stop_plan`` and times until the last of them has been cancelled and returned
to pending (its "requeued" event). Reports p50 and p99 over the trials.

    python bench/cancel_latency.py [--trials 50] [--in-flight 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from synctask import Dataset, MemoryStore, ParamGrid, SyncPlan, SyncTaskExecutor, TaskEvent, Vendor, parse_schedule


async def forever(i: int) -> None:
    await asyncio.sleep(3600)


async def trials(count: int, width: int) -> list[float]:
    ex = SyncTaskExecutor(workers=width, store=MemoryStore())
    ex.add_vendor(Vendor("v", "python"))
    ex.add_dataset(Dataset("d", "v", "d"), fetch=forever)
    runner = asyncio.create_task(ex.run(until_idle=False))
    events = ex.events()
    took: list[float] = []
    for k in range(count):
        name = f"p{k}"
        ex.add_plan(SyncPlan(name, "d", ParamGrid.from_spec({"i": {"from": 1, "to": width}}), parse_schedule("manual")))
        while ex.in_flight() < width:
            await asyncio.sleep(0.001)
        start = time.perf_counter()
        ex.stop_plan(name)
        requeued = 0
        async for event in events:
            if isinstance(event, TaskEvent) and event.plan == name and event.kind == "requeued":
                requeued += 1
                if requeued == width:
                    break
        took.append(time.perf_counter() - start)
        ex.remove_plan(name)
    ex.shutdown()
    await runner
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--in-flight", type=int, default=1000)
    args = parser.parse_args()
    took = sorted(asyncio.run(trials(args.trials, args.in_flight)))
    p50 = statistics.median(took) * 1000
    p99 = took[min(len(took) - 1, int(round(0.99 * (len(took) - 1))))] * 1000
    print(f"stop_plan with {args.in_flight} in flight, {args.trials} trials: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {took[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
