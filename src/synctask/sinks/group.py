"""Group commit for sinks: the rows of tasks that finish together go in one transaction.

A transaction per task caps a run at what one commit costs (a few thousand a second); joined,
the cost is shared by every task waiting meanwhile. Each caller still returns only once the
transaction holding its rows has committed, so "durable when ``write`` returns" holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .base import Row

__all__ = ["GroupCommit"]


class GroupCommit:
    """Runs ``write_many`` (blocking: one transaction for several tasks' rows) in a thread, for
    every batch of rows handed to ``write`` while the previous transaction was running. When a
    joined transaction fails, each task's rows are tried alone, so a bad batch fails only its task."""

    def __init__(self, write_many: Callable[[list[Sequence[Row]]], None]) -> None:
        self._write_many = write_many
        self._waiting: list[tuple[Sequence[Row], asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def write(self, rows: Sequence[Row]) -> None:
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_all())
        await done

    async def wait_idle(self) -> None:
        """Until every write handed over so far is committed (or failed)."""
        if self._committer is not None:
            await asyncio.shield(self._committer)

    async def _commit_all(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await asyncio.to_thread(self._write_many, [rows for rows, _ in group])
            except Exception as exc:
                if len(group) == 1:
                    _settle(group[0][1], exc)
                    continue
                for rows, done in group:  # find the batch that failed; the others still land
                    try:
                        await asyncio.to_thread(self._write_many, [rows])
                    except Exception as alone:
                        _settle(done, alone)
                    else:
                        _settle(done, None)
            else:
                for _, done in group:
                    _settle(done, None)


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # its task was cancelled meanwhile
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
