"""Permits from ``synctask serve``: a permit's round trip on loopback, and permits per second.

A daemon (its own process) serves a vendor whose limit is far above what is asked (so every
permit goes at once: what is measured is the daemon's own cost). First one client takes and
answers permits one after another (``Permits().take`` as a program would): the round trip of
take + answered, p50/p99/max. Then 16 clients at once, for ``--seconds``: permits per second, and
the round trip under that load. Goals (issue 26): p99 < 5 ms alone; >= 2,000 permits/s from 16.

    python bench/permits.py [--rounds 2000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from serve_daemon import TOKEN, daemon

PLANS = '''
[vendors.fast]
connector = "python:permit_tasks:fetch"
limits = [{ rate = 10000000, per = "1s" }]

[datasets.rows]
vendor = "fast"
api = "python:permit_tasks:fetch"
'''

TASKS = '''
async def fetch(i):
    return []
'''


async def client(url: str, until: float, times: list[float], count: int | None = None) -> None:
    import synctask

    os.environ["SYNCTASK_API_TOKEN"] = TOKEN
    async with synctask.Permits(url) as desk:
        done = 0
        while (count is None or done < count) and time.perf_counter() < until:
            started = time.perf_counter()
            async with desk.take("fast", dataset="rows"):
                pass
            times.append(time.perf_counter() - started)
            done += 1


def quantiles(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return (f"p50 {statistics.median(ms):.2f} ms, p99 {ms[int(len(ms) * 0.99) - 1]:.2f} ms, "
            f"max {ms[-1]:.2f} ms ({len(ms):,} permits)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with daemon("permit_tasks", TASKS, PLANS) as (url, _):
        alone: list[float] = []
        asyncio.run(client(url, time.perf_counter() + 120, alone, 100))  # warm up
        alone.clear()
        asyncio.run(client(url, time.perf_counter() + 120, alone, args.rounds))
        print(f"one client, take + answered: {quantiles(alone)}")

        async def sixteen() -> tuple[list[float], float]:
            times: list[float] = []
            started = time.perf_counter()
            until = started + args.seconds
            await asyncio.gather(*(client(url, until, times) for _ in range(16)))
            return times, time.perf_counter() - started

        times, took = asyncio.run(sixteen())
        print(f"16 clients at once: {len(times) / took:,.0f} permits/s; round trip {quantiles(times)}")


if __name__ == "__main__":
    main()
