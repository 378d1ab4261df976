"""Many awaits bounded by the same number of seconds, on one timer.

``asyncio.timeout`` arms a timer per await and cancels it after: on a fast vendor that was a
few percent of a request's CPU. Awaits bounded by the same seconds expire in the order they
started, so one queue in start order and one timer for its head bound them all; an await that
ends leaves its entry to be dropped when it reaches the head.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

__all__ = ["Deadlines"]


class Deadline:
    """One bounded await: ``with deadlines.start():`` around it (a plain ``with``, so the await
    chain gains no coroutine frame). Past its deadline its task is cancelled, and the block
    raises ``TimeoutError`` instead of the ``CancelledError``, as ``asyncio.timeout`` does."""

    __slots__ = ("owner", "deadline", "task", "cancelling", "expired")

    def __init__(self, owner: Deadlines, deadline: float, task: asyncio.Task[object]) -> None:
        self.owner = owner
        self.deadline = deadline
        self.task: asyncio.Task[object] | None = task  # None once its await ended
        self.cancelling = task.cancelling()  # cancellations asked before: not ours to swallow
        self.expired = False

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        task, self.task = self.task, None
        self.owner.ended()
        if self.expired and kind is not None and issubclass(kind, asyncio.CancelledError) and task is not None \
                and task.uncancel() <= self.cancelling:
            raise TimeoutError(f"no answer within {self.owner.seconds:g}s") from None


class Deadlines:
    """Deadlines of ``seconds`` after each ``start()``, in the order they started, on one timer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: deque[Deadline] = deque()
        self._live = 0  # entries whose await goes on
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> Deadline:
        """A deadline for the current task, ``seconds`` from now."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a deadline bounds an await of a task"
        entry = Deadline(self, loop.time() + self.seconds, task)
        self._entries.append(entry)
        self._live += 1
        if self._timer is None:
            self._timer = loop.call_at(entry.deadline, self._expire, loop)
        return entry

    def ended(self) -> None:
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
