"""Limiter precision: 10,000 tasks under 1,000 per 10 s, synctask vs aiolimiter vs pyrate-limiter.

For each limiter, 100 concurrent senders take tasks from a shared counter, wait for the limiter,
and record the instant they "send". We report the time of the last send ÷ the theoretical minimum
((tasks ÷ rate − 1) × window: the first full window goes at 0) and how many sends saw more than
the rate in the sliding window ending at them, counted the way a strict vendor counts.

    python bench/limiter_precision.py            # fake clock (virtual time), all three
    python bench/limiter_precision.py --real     # the real clock too (about 5 minutes)
    python bench/limiter_precision.py --real --window 2   # a quicker real-clock run
"""

from __future__ import annotations

import argparse
import asyncio
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable

from synctask import Limiter, Quota
from synctask.testing import run_virtual

SENDERS = 100


def over_limit(sends: list[float], rate: int, window: float) -> int:
    """Sends at which the window (t − window, t] holds more than ``rate`` sends."""
    sends = sorted(sends)
    return sum(1 for i, t in enumerate(sends) if i + 1 - bisect_right(sends, t - window) > rate)


async def drive(acquire: Callable[[], Awaitable[None]], tasks: int) -> list[float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    sends: list[float] = []
    remaining = tasks

    async def sender() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await acquire()
            sends.append(loop.time() - start)

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return sends


def synctask_acquire(rate: int, window: float) -> Callable[[], Awaitable[None]]:
    """Our limiter, used the way the executor uses it: ask, and sleep exactly until the answer."""
    limiter = Limiter()
    limiter.configure("s", [Quota(rate, window)])
    gate = limiter.gate(["s"])

    async def acquire() -> None:
        loop = asyncio.get_running_loop()
        while (when := gate.send(1, loop.time())) is not None:
            await asyncio.sleep(when - loop.time())

    return acquire


def aiolimiter_acquire(rate: int, window: float) -> Callable[[], Awaitable[None]]:
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(rate, window)

    async def acquire() -> None:
        await limiter.acquire()

    return acquire


def pyrate_acquire(rate: int, window: float) -> Callable[[], Awaitable[None]]:
    from pyrate_limiter import AbstractClock, Duration, InMemoryBucket, Rate
    from pyrate_limiter import Limiter as PyrateLimiter

    class LoopClock(AbstractClock):
        """pyrate-limiter's clock reads the event loop, so it runs in virtual time too."""

        def now(self) -> int:
            return int(asyncio.get_running_loop().time() * 1000)

    bucket = InMemoryBucket([Rate(rate, Duration.SECOND * window)])
    bucket._clock = LoopClock()
    limiter = PyrateLimiter(bucket)

    async def acquire() -> None:
        await limiter.try_acquire_async("bench")

    return acquire


LIMITERS = {
    "synctask": synctask_acquire,
    "aiolimiter": aiolimiter_acquire,
    "pyrate-limiter": pyrate_acquire,
}


def measure(name: str, clock: str, tasks: int, rate: int, window: float) -> None:
    acquire = LIMITERS[name](rate, window)
    wall = time.perf_counter()
    if clock == "fake":
        sends = run_virtual(drive(acquire, tasks))
    else:
        sends = asyncio.run(drive(acquire, tasks))
    wall = time.perf_counter() - wall
    ideal = (tasks / rate - 1) * window
    took = max(sends)
    print(f"{clock:5} {name:15} last send {took:9.3f} s   ÷ minimum {took / ideal:6.4f}   "
          f"over-limit sends {over_limit(sends, rate, window):6d}   (wall {wall:6.2f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--real", action="store_true", help="also run on the real clock")
    args = parser.parse_args()
    ideal = (args.tasks / args.rate - 1) * args.window
    print(f"{args.tasks} tasks, {args.rate} per {args.window:g} s sliding window; "
          f"theoretical minimum {ideal:g} s; {SENDERS} concurrent senders")
    clocks = ["fake", "real"] if args.real else ["fake"]
    for clock in clocks:
        for name in LIMITERS:
            measure(name, clock, args.tasks, args.rate, args.window)


if __name__ == "__main__":
    main()
