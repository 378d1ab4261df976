"""Frozen event objects the executor emits; progress displays, logs and client code observe them.

Events never carry secrets: every secret a plan loads is masked (``redact``) in each message
before the executor emits it, whatever the vendor echoed back.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Event", "TaskEvent", "PlanEvent", "FreezeEvent", "SkipEvent", "StreamEvent"]


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
