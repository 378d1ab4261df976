"""The worker pool: where admitted tasks run, and how they are cancelled and drained.

The executor decides what runs and when; the pool only runs it. Each task in flight is an
asyncio task of this process that awaits the task's fetch through a ``Runner`` (here, in this
process; on Ray, on an actor of some node), then hands the result to ``deliver`` (rows to the
sink, in this process) and reports the outcome to ``finish`` exactly once, whatever happens:
an answer, a failure, a timeout, or a cancellation (stop, cancel, shutdown).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from .deadlines import Deadlines
from .errors import Failure, OutcomeKind, classify
from .fetchers import Fetcher
from .model import SyncTask

__all__ = ["Runner", "LocalRunner", "TaskPool"]

Deliver = Callable[[SyncTask, Any], Awaitable[tuple[int, Mapping[str, Any] | None]]]
Finish = Callable[[SyncTask, Failure | None, int, Mapping[str, Any] | None], None]


class Runner(Protocol):
    """Runs one task's fetch somewhere and returns what it returned (or raises its failure)."""

    async def run(self, task: SyncTask) -> Any: ...


class LocalRunner:
    """Fetches in this process, each task with its plan's timeout."""

    def __init__(self, fetchers: Mapping[str, Fetcher], dataset_of: Callable[[SyncTask], str]) -> None:
        self.fetchers = fetchers
        self.dataset_of = dataset_of
        self._timeouts: dict[float, Deadlines] = {}  # one timer per timeout a plan sets

    async def run(self, task: SyncTask) -> Any:
        fetcher = self.fetchers[self.dataset_of(task)]
        if task.timeout is None:
            return await fetcher.fetch(task)
        deadlines = self._timeouts.get(task.timeout)
        if deadlines is None:
            deadlines = self._timeouts[task.timeout] = Deadlines(task.timeout)
        with deadlines.start():
            return await fetcher.fetch(task)


class TaskPool:
    """The tasks in flight, one asyncio task each, with their cancellation and drain."""

    def __init__(self, runner: Runner, deliver: Deliver, finish: Finish) -> None:
        self.runner = runner
        self._deliver = deliver
        self._finish = finish
        self._active: dict[SyncTask, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._active)

    def tasks(self) -> list[SyncTask]:
        return list(self._active)

    def start(self, task: SyncTask) -> None:
        self._active[task] = asyncio.create_task(self._run(task))

    async def _run(self, task: SyncTask) -> None:
        failure: Failure | None = None
        rows = 0
        follow_up: Mapping[str, Any] | None = None
        try:
            try:
                result = await self.runner.run(task)
                rows, follow_up = await self._deliver(task, result)
            except asyncio.CancelledError:
                failure = Failure(OutcomeKind.CANCELLED, "stopped while running")
                raise
            except Exception as exc:  # every failure becomes an outcome; none may kill the loop
                failure = classify(exc=exc)
                if isinstance(exc, TimeoutError) and task.timeout:
                    failure = Failure(OutcomeKind.TIMEOUT, f"no answer within {task.timeout:g}s")
        finally:
            self._active.pop(task, None)
            self._finish(task, failure, rows, follow_up if failure is None else None)

    def cancel(self, tasks: Iterable[SyncTask]) -> None:
        """Cancel these tasks where they run; each is reported cancelled (back to its queue)."""
        for task in tasks:
            handle = self._active.get(task)
            if handle is not None and handle.cancel() and _not_started(handle):
                handle.add_done_callback(functools.partial(self._reap, task))

    def _reap(self, task: SyncTask, handle: asyncio.Task[None]) -> None:
        """A task cancelled before its coroutine ever ran (a fatal error in the same loop turn)
        skips ``_run``'s cleanup: report it cancelled here, so it returns to its queue. (One that
        ran cleaned up itself, and may already be running again as a retry.)"""
        if self._active.get(task) is handle:
            del self._active[task]
            self._finish(task, Failure(OutcomeKind.CANCELLED, "stopped before it started"), 0, None)

    async def settled(self, tasks: Iterable[SyncTask], timeout: float) -> None:
        """Wait (up to ``timeout``) until these tasks, cancelled or not, have finished ending."""
        handles = [handle for task in tasks if (handle := self._active.get(task)) is not None]
        if handles:
            await asyncio.wait(handles, timeout=timeout)

    async def drain(self, grace: float, now: Callable[[], float], hurry: Callable[[], bool]) -> None:
        """Let tasks in flight finish within ``grace`` seconds (unless ``hurry()`` says a second
        interrupt came), then cancel the rest and wait for them to report."""
        if not self._active:
            return
        if not hurry():
            pending = set(self._active.values())
            deadline = now() + grace
            while pending and not hurry():
                left = deadline - now()
                if left <= 0:
                    break
                _, pending = await asyncio.wait(pending, timeout=min(left, 0.1))
        self.cancel(list(self._active))
        remaining = list(self._active.values())
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)


def _not_started(handle: asyncio.Task[None]) -> bool:
    """True when the task's coroutine has not run yet (then its own cleanup never will)."""
    coro = handle.get_coro()
    return inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
