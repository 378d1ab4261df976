"""Rows to client code as an async iterator: ``async for rows in sink: ...``.

``write`` returns once the consumer has taken the batch *and asked for the next one* (or
called ``ack()``), so a task counts as done only after client code has handled its rows.
Idempotency is the consumer's: it may see a batch again if the process died before the ack.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from .base import Row


class StreamSink:
    """Client code iterates over the batches of rows as tasks deliver them."""

    def __init__(self) -> None:
        self._batches: asyncio.Queue[tuple[list[Row], asyncio.Future[None]] | None] = asyncio.Queue(1)
        self._pending: asyncio.Future[None] | None = None
        self._closed = False

    async def write(self, rows: Sequence[Row]) -> None:
        if self._closed:
            raise RuntimeError("the stream sink is closed")
        handled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._batches.put((list(rows), handled))
        await handled

    def ack(self) -> None:
        """The batch last given out is handled (asking for the next batch does this too)."""
        if self._pending is not None and not self._pending.done():
            self._pending.set_result(None)
        self._pending = None

    def __aiter__(self) -> AsyncIterator[list[Row]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[list[Row]]:
        while True:
            self.ack()
            item = await self._batches.get()
            if item is None:
                return
            rows, self._pending = item
            yield rows

    async def close(self) -> None:
        """End the iteration once the consumer has taken what was written."""
        if not self._closed:
            self._closed = True
            await self._batches.put(None)
