"""Worker loss on Ray: from an actor's death to its tasks running again on another actor.

A local two-node cluster runs a plan of Python tasks that each take 0.5 s; once 50 are done
the benchmark kills one actor (``ray.kill``) and measures, for each task that was in flight on
it, the time from the kill to that task starting again; and the time until the master heard of
the loss. Printed: tasks requeued, time to detect, p50 and max time to run again.

    python bench/ray_loss.py [--trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

TASKS = '''
import asyncio

async def slow(i):
    await asyncio.sleep(0.5)
    return None
'''

PLANS = '''
[vendors.v]
connector = "python:bench_slow:slow"

[datasets.d]
vendor = "v"
api = "python:bench_slow:slow"

[[plans]]
name = "p"
dataset = "d"
params = { i = { from = 1, to = 400 } }
'''


async def trial(address: str) -> tuple[int, float, list[float]]:
    import ray

    from synctask import SyncTaskExecutor, parse_plan_text
    from synctask.events import PlanEvent, TaskEvent

    ex = SyncTaskExecutor(parse_plan_text(PLANS), workers=16, ray=address)
    killed_at: list[float] = []
    heard: list[float] = []
    requeued: set[str] = set()
    again: list[float] = []

    def listen(event: object) -> None:
        if not killed_at:
            return
        if isinstance(event, PlanEvent) and event.message and "was lost" in event.message:
            heard.append(time.perf_counter() - killed_at[0])
        elif isinstance(event, TaskEvent):
            if event.kind == "requeued":
                requeued.add(event.task_id)
            elif event.kind == "started" and event.task_id in requeued:
                requeued.discard(event.task_id)
                again.append(time.perf_counter() - killed_at[0])

    ex.listen(listen)
    runner = asyncio.create_task(ex.run())
    while ex.progress.snapshot("p", time.time()).done < 50:
        await asyncio.sleep(0.01)
    assert ex._ray is not None
    killed_at.append(time.perf_counter())
    ray.kill(ex._ray.workers[0].handle)
    await runner
    return len(again), heard[0] if heard else float("nan"), again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    from ray_cluster import two_nodes

    with two_nodes("bench_slow", TASKS) as address:
        for n in range(args.trials):
            count, detect, again = asyncio.run(trial(address))
            print(f"trial {n + 1}: {count} tasks requeued; loss heard after {detect * 1000:.0f} ms; running again "
                  f"after p50 {statistics.median(again) * 1000:.0f} ms, max {max(again) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
