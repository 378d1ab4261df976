"""Frozen event objects the executor emits, and the hub that hands them to whoever observes them
(progress displays, logs, client code).

Events never carry secrets: every secret a plan loads is masked (``redact``) in each message
before the executor emits it, whatever the vendor echoed back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .redact import SECRETS

if TYPE_CHECKING:
    from .model import SyncTask
    from .progress import Progress

__all__ = ["Event", "TaskEvent", "PlanEvent", "FreezeEvent", "KeyEvent", "SkipEvent", "StreamEvent", "EventHub"]

_log = logging.getLogger("synctask")


@dataclass(frozen=True)
class Event:
    at: float  # epoch seconds
    plan: str


@dataclass(frozen=True)
class TaskEvent(Event):
    """A task started or ended. ``kind``: started, done, failed, retry, requeued, cancelled."""

    kind: str
    task_id: str
    message: str | None = None
    rows: int = 0
    more: int = 0  # tasks this one added to its plan (a next page)
    attempt: int = 0  # tries that counted so far (1 after a first try failed); a rate-limited try does not count
    outcome: str = ""  # how the try's answer ended (see ``answer_outcome``): ok, server, rate_limited, banned...


@dataclass(frozen=True)
class PlanEvent(Event):
    """A plan's run changed state (running, paused, stopped, completed, failed, cancelled...)."""

    state: str
    run_id: str | None = None
    total: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class FreezeEvent(Event):
    """A scope stopped admitting requests until ``until`` (a rate limit or an exhausted quota)."""

    scope: str
    until: float
    message: str
    new: bool = True  # False: an answer to a request already in flight extended the same freeze


@dataclass(frozen=True)
class KeyEvent(Event):
    """The vendor refused one of its several keys (401/403): no task takes ``key`` (the name of
    the variable holding it) any more; the ``left`` keys go on."""

    vendor: str
    key: str
    message: str
    left: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkipEvent(Event):
    """``count`` more tasks of the plan were already done in an earlier run and were skipped;
    ``total`` is the plan's task count now (pages found among skipped tasks add to it)."""

    count: int
    total: int | None = None


@dataclass(frozen=True)
class StreamEvent(Event):
    """A stream task wrote another batch: ``messages`` received and ``rows`` written since the last."""

    task_id: str
    messages: int
    rows: int


class EventHub:
    """Hands each event to the listeners (called at once, nothing dropped) and the subscribers
    (queues that lose their oldest when ``buffer`` behind), after masking any secret in its
    message and counting it in ``progress``. A listener that raises is removed, never the engine."""

    def __init__(self, progress: Progress, buffer: int = 10_000) -> None:
        self.progress = progress
        self.buffer = buffer
        self.listeners: list[Callable[[Event], None]] = []
        self.subscribers: list[asyncio.Queue[Event]] = []

    def task_started(self, now: float, task: SyncTask) -> None:
        if self.listeners or self.subscribers:
            self.emit(TaskEvent(now, task.plan, "started", task.id))
        else:  # nobody else listens: no event object per task, only the count of tasks in flight
            self.progress.started(task.plan)

    def task_ended(self, now: float, task: SyncTask, kind: str, message: str | None, rows: int, more: int,
                   outcome: str = "") -> None:
        if self.listeners or self.subscribers:
            self.emit(TaskEvent(now, task.plan, kind, task.id, message, rows, more, task.attempt, outcome))
        else:  # nobody else listens: progress counts it without an event object per task
            self.progress.ended(task.plan, kind, now, message, rows, more)

    def listen(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback)

    async def follow(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self.buffer)
        self.subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self.subscribers.remove(queue)

    def emit(self, event: Event) -> None:
        if SECRETS and (message := getattr(event, "message", None)):  # the last guard for secrets
            masked = SECRETS(message)
            if masked != message:
                event = dataclasses.replace(event, message=masked)  # type: ignore[call-arg]
        self.progress.observe(event)
        for callback in self.listeners:
            try:
                callback(event)
            except Exception:  # a listener's failure (a closed pipe, a bug) must not stop the engine
                _log.warning("an event listener failed and was removed", exc_info=True)
                # A new list: this loop goes on over the old one, so the others still hear it.
                self.listeners = [c for c in self.listeners if c is not callback]
        for queue in self.subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
