"""Many awaits bounded by the same number of seconds, on one timer.

``asyncio.timeout`` arms a timer per await and cancels it after: on a fast vendor that was a
few percent of a request's CPU. Awaits bounded by the same seconds expire in the order they
started, so one queue in start order and one timer for its head bound them all; an await that
ends leaves its entry to be dropped when it reaches the head.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["Deadlines"]

T = TypeVar("T")


class _Entry:
    __slots__ = ("deadline", "task", "cancelling", "expired")

    def __init__(self, deadline: float, task: asyncio.Task[object]) -> None:
        self.deadline = deadline
        self.task: asyncio.Task[object] | None = task  # None once its await ended
        self.cancelling = task.cancelling()  # cancellations asked before: not ours to swallow
        self.expired = False


class Deadlines:
    """``await deadlines.bound(awaitable)``: its result, or ``TimeoutError`` once ``seconds`` have
    passed since it started (the awaiting task is cancelled there, as ``asyncio.timeout`` does)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: deque[_Entry] = deque()
        self._live = 0  # entries whose await goes on
        self._timer: asyncio.TimerHandle | None = None

    async def bound(self, awaitable: Awaitable[T]) -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "Deadlines.bound runs in a task"
        entry = _Entry(loop.time() + self.seconds, task)
        self._entries.append(entry)
        self._live += 1
        if self._timer is None:
            self._timer = loop.call_at(entry.deadline, self._expire, loop)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if entry.expired and task.uncancel() <= entry.cancelling:
                raise TimeoutError(f"no answer within {self.seconds:g}s") from None
            raise
        finally:
            entry.task = None
            self._live -= 1
            if len(self._entries) > 64 + 4 * self._live:  # a slow head holds many ended ones behind it
                self._entries = deque(e for e in self._entries if e.task is not None)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel every await past its deadline, drop those that ended, arm for the next one."""
        self._timer = None
        now = loop.time()
        entries = self._entries
        while entries:
            head = entries[0]
            if head.task is None:
                entries.popleft()
            elif head.deadline <= now:
                entries.popleft()
                head.expired = True
                head.task.cancel()
            else:
                self._timer = loop.call_at(head.deadline, self._expire, loop)
                return
