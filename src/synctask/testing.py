"""Testing helpers: an asyncio event loop whose clock jumps ahead instead of sleeping.

Code that reads ``loop.time()`` and sleeps with ``asyncio.sleep`` / ``loop.call_at`` (the
executor does; so does aiolimiter) runs in virtual time: a 90-second schedule finishes in well
under a second, with reproducible timings. Use ``run_virtual(coro)`` where you would use
``asyncio.run(coro)``. Work done in threads does not mix with it: the clock races ahead of them.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from typing import Any

ITERATION_COST = 1e-6


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        # Each turn of the loop costs a microsecond, as a real one roughly does; without it a
        # library that reschedules itself "now" (aiolimiter after float rounding) never
        # sees time pass. Then jump to the next timer instead of waiting for it.
        now = self._loop.virtual_now + ITERATION_COST
        if not ready and timeout is not None and timeout > ITERATION_COST:
            now = max(self._loop.virtual_now + timeout, math.nextafter(now, math.inf))
        self._loop.virtual_now = now
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector loop whose ``time()`` starts at 0 and jumps to the next timer when idle."""

    def __init__(self) -> None:
        self.virtual_now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.virtual_now


__all__ = ["VirtualTimeLoop", "run_virtual"]


def run_virtual(coro: Any) -> Any:
    """Run ``coro`` to completion on a new ``VirtualTimeLoop`` and close it."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
