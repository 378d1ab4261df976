"""WebSocket streams: one long-running task subscribes, turns each message into a row, writes
rows to the sink in batches, and reconnects with backoff, asking the vendor to continue after
the last message it received (``from_seq``). Every received message is flushed before a
reconnect and before the task stops (stop, cancel, shutdown), so none it acknowledged is lost.

Task parameters: ``symbols`` (a list or one string) and ``max_messages`` (stop after that many;
none: run until stopped). After each written batch the task's position (the next sequence number
and the messages received) is saved, so a stream stopped in one run continues in the next.
Dataset options: ``path`` (default ``/ws``), ``batch`` (rows per write, default 100).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest
from ..model import SyncTask
from ..sinks.base import Row, Sink
from .base import Streamed

if TYPE_CHECKING:
    import aiohttp

    from .sessions import SessionPool

__all__ = ["WebSocketFetcher", "Streamed"]


class WebSocketFetcher:
    def __init__(self, vendor: str, url: str, sessions: SessionPool, sink: Callable[[], Sink | None],
                 batch: int = 100, backoff: tuple[float, float] = (0.05, 5.0),
                 on_flush: Callable[[SyncTask, int, int, dict[str, int]], None] | None = None,
                 resume: Callable[[SyncTask], Mapping[str, Any] | None] | None = None,
                 on_answered: Callable[[SyncTask, float], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 on_reconnect: Callable[[SyncTask, int, int | None], None] | None = None) -> None:
        self.on_answered = on_answered
        self.on_reconnect = on_reconnect  # told (task, reconnects so far, seq it resumes at) as it reconnects
        self.clock = clock
        self.on_flush = on_flush
        self.resume = resume
        self.vendor = vendor
        self.url = url
        self.sessions = sessions
        self.sink = sink
        self.batch = batch
        self.backoff = backoff

    async def fetch(self, task: SyncTask) -> Streamed:
        symbols = task.params.get("symbols")
        if isinstance(symbols, str):
            symbols = [symbols]
        if not symbols:
            raise InvalidRequest("a stream task needs symbols = [...] to subscribe to")
        limit = task.params.get("max_messages")
        state = _State(task)
        position = self.resume(task) if self.resume is not None else None
        if position:  # an earlier run stopped part-way: go on after its last written message
            state.next_seq = position.get("next_seq")
            state.received = int(position.get("received", 0))
        try:
            await self._stream(list(symbols), int(limit) if limit is not None else None, state)
        except asyncio.CancelledError:
            await asyncio.shield(self._flush(state))  # keep every message already received
            raise
        await self._flush(state)
        return Streamed(state.written, state.reconnects)

    async def _stream(self, symbols: list[str], limit: int | None, state: _State) -> None:
        import aiohttp  # here, not at the top: a plan file is checked without loading aiohttp

        failures = 0
        while limit is None or state.received < limit:
            try:
                async with self.sessions.get(self.vendor).ws_connect(self.url, heartbeat=30) as ws:
                    if self.on_answered is not None and state.reconnects == 0:
                        # The handshake's answer: the admitted connection is counted from here,
                        # not for the stream's whole life.
                        self.on_answered(state.task, self.clock())
                    await ws.send_json({"op": "subscribe", "symbols": symbols, "from_seq": state.next_seq})
                    if state.reconnects and self.on_reconnect is not None:
                        self.on_reconnect(state.task, state.reconnects, state.next_seq)
                    failures = 0
                    async for message in ws:
                        if message.type is not aiohttp.WSMsgType.TEXT:
                            break
                        state.buffer.append(_row(message.data))
                        state.received += 1
                        state.next_seq = int(state.buffer[-1]["seq"]) + 1
                        if len(state.buffer) >= self.batch:
                            await self._flush(state)
                        if limit is not None and state.received >= limit:
                            await _close(ws)
                            return
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
            await self._flush(state)
            failures += 1
            state.reconnects += 1
            low, high = self.backoff
            await asyncio.sleep(random.uniform(0, min(high, low * 2 ** (failures - 1))))

    async def _flush(self, state: _State) -> None:
        if not state.buffer:
            return
        rows, state.buffer = state.buffer, []
        sink = self.sink()
        if sink is not None:
            await sink.write(rows)
        state.written += len(rows)
        if self.on_flush is not None:  # one row per message; the position only once they are written
            position = {"received": state.received - len(state.buffer)}
            if state.next_seq is not None:
                position["next_seq"] = int(rows[-1]["seq"]) + 1
            self.on_flush(state.task, len(rows), len(rows), position)


class _State:
    __slots__ = ("task", "buffer", "received", "written", "reconnects", "next_seq")

    def __init__(self, task: SyncTask) -> None:
        self.task = task
        self.buffer: list[Row] = []
        self.received = self.written = self.reconnects = 0
        self.next_seq: int | None = None


async def _close(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close politely, but do not wait for ever on a server that keeps sending and never answers
    the close frame (aiohttp reads until it does): after 2 s, drop the connection."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            await ws.close()


def _row(data: str) -> Row:
    try:
        row = json.loads(data)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed stream message at character {exc.pos}: {data[:80]!r}") from None
    if not isinstance(row, dict) or "seq" not in row:
        raise InvalidRequest(f"a stream message needs an object with 'seq', got {data[:80]!r}")
    return row
