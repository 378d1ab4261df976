"""The daemon's event stream (``GET /api/events``): the executor's events as a person reads them.

Routine task events (a task started, a task done) are what the progress snapshots count, so the
default stream leaves them out, and it folds the rest into lines worth reading: one line per
freeze that counts the answers it held back, one line per plan for a burst of retries ("12
retries since 10:31:07"), one per failure and per plan change. Every item has an ``id`` that
only grows, across restarts too, and the ``line`` it draws (an update repeats its line's id);
a subscriber that comes back with ``Last-Event-ID`` gets only what it has not seen.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..events import Event, FreezeEvent, KeyEvent, PlanEvent, SkipEvent, StreamEvent, TaskEvent
from ..history import iso
from ..redact import SECRETS

__all__ = ["Feed", "Broadcast", "as_dict", "chunk", "KEEP", "RETRY_FOLD"]

KEEP = 200  # the lines a new subscriber is sent first (and a resuming one, of those it missed)
RETRY_FOLD = 60.0  # a plan's retries within this many seconds of the last one share a line
ROUTINE = frozenset({"started", "done"})  # task events only ?tasks=all subscribers get
_LIMITED = frozenset({"rate_limited", "quota", "banned"})  # a requeue its freeze line counts
_QUIET = (SkipEvent, StreamEvent)  # told by the progress snapshots, not as lines
BACKLOG = 1_000  # chunks a slow subscriber may fall behind before it loses the oldest
PROGRESS_EVERY = 0.5  # seconds between progress snapshots while something changes


class Feed:
    """The folded event lines: ``take`` turns an event into the item to send (or None), and
    the last ``KEEP`` lines are kept, each as its latest version, oldest first."""

    def __init__(self, keep: int = KEEP, clock: Callable[[], float] = time.time) -> None:
        self.keep = keep
        self.lines: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.last_id = int(clock() * 1_000_000)  # ids keep growing when the daemon restarts
        self._freeze_line: dict[str, int] = {}  # scope -> its current freeze's line
        self._retry_line: dict[str, int] = {}  # plan -> its retries' current line

    def take(self, event: Event) -> dict[str, Any] | None:
        if isinstance(event, TaskEvent):
            if event.kind in ROUTINE or event.kind == "cancelled":
                return None
            if event.kind == "requeued":
                return None  # a freeze's line counts the rate-limited ones; a control op is a plan line
            if event.kind == "retry":
                return self._retry(event)
            return self._new(as_dict(event))
        if isinstance(event, FreezeEvent):
            return self._freeze(event)
        if isinstance(event, _QUIET):
            return None
        return self._new(as_dict(event))

    def since(self, last_id: int | None) -> list[dict[str, Any]]:
        """The kept lines changed after ``last_id`` (None: all), oldest first."""
        if last_id is None:
            return list(self.lines.values())
        return [item for item in self.lines.values() if item["id"] > last_id]

    def _freeze(self, event: FreezeEvent) -> dict[str, Any]:
        line = self._freeze_line.get(event.scope)
        item = self.lines.get(line) if line is not None else None
        if event.new or item is None:
            data = as_dict(event)
            data["held"] = 1
            data["ban"] = _is_ban(event.message)
            made = self._new(data)
            self._freeze_line[event.scope] = made["line"]
            return made
        held = item["held"] + 1
        return self._update(item, held=held, until=iso(event.until, precise=True))

    def _retry(self, event: TaskEvent) -> dict[str, Any]:
        line = self._retry_line.get(event.plan)
        item = self.lines.get(line) if line is not None else None
        message = _masked(event.message)
        if item is None or event.at - item["_last"] > RETRY_FOLD:
            made = self._new({"type": "retries", "plan": event.plan, "at": iso(event.at, precise=True),
                              "first_at": iso(event.at, precise=True), "count": 1, "message": message,
                              "_last": event.at})
            self._retry_line[event.plan] = made["line"]
            return made
        return self._update(item, count=item["count"] + 1, message=message, at=iso(event.at, precise=True),
                            _last=event.at)

    def _new(self, data: dict[str, Any]) -> dict[str, Any]:
        self.last_id += 1
        data["id"] = data["line"] = self.last_id
        self.lines[self.last_id] = data
        while len(self.lines) > self.keep:
            self.lines.popitem(last=False)
        return data

    def _update(self, item: dict[str, Any], **changes: Any) -> dict[str, Any]:
        self.last_id += 1
        item.update(changes, id=self.last_id)
        self.lines.move_to_end(item["line"])
        return item


def _is_ban(message: str) -> bool:
    return "(HTTP 418)" in message or ("(HTTP 403)" in message and "ban" in message.lower())


def _masked(message: str | None) -> str | None:
    return SECRETS(message) if SECRETS and message else message


def as_dict(event: Event) -> dict[str, Any]:
    """An event as the API sends it: its type, its fields, times in ISO 8601, no secret."""
    data = {"type": _TYPE[type(event)], **vars(event)}
    data["at"] = iso(event.at, precise=True)
    if isinstance(event, FreezeEvent):
        data["until"] = iso(event.until, precise=True)
    if isinstance(data.get("message"), str):
        data["message"] = _masked(data["message"])
    return data


_TYPE: dict[type, str] = {cls: cls.__name__.removesuffix("Event").lower()
                          for cls in (TaskEvent, PlanEvent, FreezeEvent, KeyEvent, SkipEvent, StreamEvent)}


def chunk(batch: list[dict[str, Any]]) -> bytes:
    """One server-sent event: ``id:`` the newest line id in it (if any), ``data:`` the JSON array
    of ``batch`` (fields starting with ``_`` are the feed's own)."""
    ids = [item["id"] for item in batch if "id" in item]
    head = f"id: {max(ids)}\n".encode() if ids else b""
    shown = [{k: v for k, v in item.items() if not k.startswith("_")} for item in batch]
    return head + b"data: " + json.dumps(shown, default=str).encode() + b"\n\n"


class Broadcast:
    """The executor's events for every SSE subscriber: gathered over a loop turn, folded, encoded
    once, and handed to each subscriber as one chunk (a slow one loses its oldest chunks, never
    slows the engine). Routine task events cost one check when no subscriber wants them."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], busy: Callable[[], int]) -> None:
        self._snapshot = snapshot
        self._busy = busy
        self.feed = Feed()
        self.subscribers: list[asyncio.Queue[bytes]] = []
        self._every: list[asyncio.Queue[bytes]] = []  # ?tasks=all
        self._pending: list[Event] = []
        self._changed = False
        self._ticker: asyncio.Task[None] | None = None

    def join(self, queue: asyncio.Queue[bytes], every: bool) -> None:
        (self._every if every else self.subscribers).append(queue)
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def leave(self, queue: asyncio.Queue[bytes], every: bool) -> None:
        (self._every if every else self.subscribers).remove(queue)
        if not self.subscribers and not self._every and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def __call__(self, event: Event) -> None:
        if type(event) is TaskEvent and event.kind in ROUTINE:
            self._changed = True
            if not self._every:
                return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(event)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self._changed = True
        if self._every:
            put(self._every, chunk([as_dict(e) for e in batch]))
        folded: dict[int, dict[str, Any]] = {}  # one version of each line per chunk: its newest
        for event in batch:
            item = self.feed.take(event)
            if item is not None:
                folded.pop(item["line"], None)
                folded[item["line"]] = dict(item)
        if self.subscribers and folded:
            put(self.subscribers, chunk(list(folded.values())))

    def snapshot(self) -> bytes:
        """Every plan's and every limit's state now, as one ``progress`` event."""
        return chunk([self._snapshot()])

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            if self._changed or self._busy():
                self._changed = False
                put([*self.subscribers, *self._every], self.snapshot())


def put(queues: list[asyncio.Queue[bytes]], data: bytes) -> None:
    """Hand ``data`` to each subscriber; a full one loses its oldest chunk, the engine never waits."""
    for queue in queues:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(data)
