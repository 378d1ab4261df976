"""`synctask run` drives the engine on uvloop, whose loop.time() counts whole milliseconds: the
executor's clock must still give the instant itself (the limiter's precision)."""

from __future__ import annotations

import asyncio
import time

import pytest

from synctask import SyncTaskExecutor
from synctask.cli import _run_engine

uvloop = pytest.importorskip("uvloop")


def test_the_engine_runs_on_uvloop_with_a_clock_finer_than_milliseconds():
    executor = SyncTaskExecutor(workers=1)

    async def main() -> tuple[str, list[float], float]:
        executor._bind_loop()
        gaps = []
        for _ in range(20):
            first = executor._now()
            busy_until = time.monotonic() + 0.0003
            while time.monotonic() < busy_until:
                pass
            gaps.append(executor._now() - first)
        return type(asyncio.get_running_loop()).__module__, gaps, executor._now()

    module, gaps, now = _run_engine(main())
    assert module.startswith("uvloop")
    assert all(gap >= 0.0003 for gap in gaps)
    # loop.time() there moves by whole milliseconds: every gap would be 0 or a multiple of 1 ms
    assert any(abs(gap * 1000 - round(gap * 1000)) > 0.01 for gap in gaps), gaps
    assert abs(now - time.time()) < 0.05  # epoch seconds, as on asyncio's own loop


def test_without_fast_the_engine_runs_on_asyncio_own_loop():
    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert _run_engine(main(), fast=False).startswith("asyncio")


def test_the_engine_runs_with_fewer_cycle_collections_and_puts_the_collector_back_after():
    import gc

    from synctask.cli import GC_THRESHOLDS

    before = gc.get_threshold()

    async def main() -> tuple[tuple[int, int, int], int]:
        return gc.get_threshold(), gc.get_freeze_count()

    during, frozen = _run_engine(main())
    assert during == GC_THRESHOLDS and frozen > 1000  # what the start made is left alone
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
