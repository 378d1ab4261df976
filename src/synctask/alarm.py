"""What the executor's loop sleeps on between turns: rung by anything that may let more run
(a task ended, a plan changed, a lease renewed), or by its timer at the next due instant.

``asyncio.wait_for(event.wait(), timeout)`` did the same with a task, a timeout context and
their handles per turn; at thousands of turns a second that was measurable. Here a turn's sleep
is one future and one timer handle.
"""

from __future__ import annotations

import asyncio

__all__ = ["Alarm"]


class Alarm:
    """``ring()`` wakes the sleeper (or its next sleep, if none sleeps now); ``sleep(timeout)``
    returns once rung or after ``timeout`` seconds (None: only when rung)."""

    def __init__(self) -> None:
        self._rung = False
        self._sleeper: asyncio.Future[None] | None = None

    def ring(self) -> None:
        self._rung = True
        sleeper = self._sleeper
        if sleeper is not None and not sleeper.done():
            sleeper.set_result(None)

    @property
    def rung(self) -> bool:
        """Rung since the last ``clear``."""
        return self._rung

    def clear(self) -> None:
        """Forget rings so far: the turn that follows sees what they announced."""
        self._rung = False

    async def sleep(self, timeout: float | None) -> None:
        if self._rung:
            return
        loop = asyncio.get_running_loop()
        self._sleeper = sleeper = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _wake, sleeper)
        try:
            await sleeper
        finally:
            self._sleeper = None
            if timer is not None:
                timer.cancel()


def _wake(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)
