"""Deadlines: many awaits bounded by the same seconds on one timer, as asyncio.timeout bounds one."""

from __future__ import annotations

import asyncio

import pytest

from synctask.deadlines import Deadlines


async def bound(deadlines, awaitable):
    with deadlines.start():
        return await awaitable


async def cancelled(task):
    """Cancel ``task`` and check it ends cancelled (not timed out)."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_an_await_past_its_deadline_raises_timeout_and_the_others_finish():
    async def main():
        deadlines = Deadlines(0.2)
        slow = asyncio.create_task(bound(deadlines, asyncio.sleep(5, "slow")))
        quick = [asyncio.create_task(bound(deadlines, asyncio.sleep(0.01 * k, k))) for k in range(5)]
        assert await asyncio.gather(*quick) == list(range(5))
        with pytest.raises(TimeoutError, match=r"no answer within 0.2s"):
            await slow
        assert asyncio.current_task().cancelling() == 0

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    async def main():
        deadlines = Deadlines(5)
        task = asyncio.create_task(bound(deadlines, asyncio.sleep(5)))
        await asyncio.sleep(0.01)
        await cancelled(task)

    asyncio.run(main())


def test_ended_awaits_behind_a_slow_one_do_not_pile_up():
    async def main():
        deadlines = Deadlines(30)
        slow = asyncio.create_task(bound(deadlines, asyncio.sleep(30)))
        await asyncio.sleep(0)
        for _ in range(5_000):
            await bound(deadlines, asyncio.sleep(0))
        assert len(deadlines._entries) <= 64 + 4 * 2
        await cancelled(slow)

    asyncio.run(main())


def test_each_deadline_counts_from_its_own_start():
    async def main():
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(0.3)
        first = asyncio.create_task(bound(deadlines, asyncio.sleep(5)))
        await asyncio.sleep(0.2)
        started = loop.time()
        second = asyncio.create_task(bound(deadlines, asyncio.sleep(5)))
        with pytest.raises(TimeoutError):
            await first
        with pytest.raises(TimeoutError):
            await second
        assert loop.time() - started >= 0.29

    asyncio.run(main())
