"""`synctask run` drives the engine on uvloop, whose loop.time() is read once per turn in
milliseconds: the executor's clock must still give the instant itself (the limiter's precision)."""

from __future__ import annotations

import asyncio
import time

import pytest

from synctask import SyncTaskExecutor
from synctask.cli import _run_engine

uvloop = pytest.importorskip("uvloop")


def test_the_engine_runs_on_uvloop_and_its_clock_moves_within_a_turn():
    executor = SyncTaskExecutor(workers=1)

    async def main() -> tuple[str, float, float]:
        executor._bind_loop()
        first = executor._now()
        busy_until = time.monotonic() + 0.005
        while time.monotonic() < busy_until:  # no await: the same loop turn
            pass
        return type(asyncio.get_running_loop()).__module__, first, executor._now()

    module, first, second = _run_engine(main())
    assert module.startswith("uvloop")
    assert second - first >= 0.005  # loop.time() would not have moved within the turn
    assert abs(first - time.time()) < 0.05  # epoch seconds, as on asyncio's own loop


def test_without_fast_the_engine_runs_on_asyncio_own_loop():
    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert _run_engine(main(), fast=False).startswith("asyncio")
