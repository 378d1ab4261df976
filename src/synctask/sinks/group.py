"""Group commit for sinks: the rows of tasks that finish together go in one transaction.

A transaction per task caps a run at what one commit costs; joined, the cost is shared by every
task that handed rows over in the same turn of the event loop, or the next when they are few
(``GATHER``: the answers that arrive meanwhile join them; against a fast vendor at 16 workers a
turn ends ~3 tasks, and a transaction per turn cost ~8% of the CPU). The transaction runs on the
loop: in WAL mode it is a write to the page cache, and handing each commit to
a thread cost more CPU than the commit itself (each hand-over of the GIL wakes two threads).
Only when another writer holds the database's lock does a group go to a thread, to wait there
(and the groups after it follow it, in order). Each caller still returns only once the
transaction holding its rows has committed: "durable when ``write`` returns".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from .base import Row

__all__ = ["GroupCommit", "WouldWait"]

GATHER = 16  # batches: a group this large is written at once; a smaller one waits one more loop turn
WriteMany = Callable[[list[Sequence[Row]], bool], None]
Group = list[tuple[Sequence[Row], asyncio.Future[None]]]


class WouldWait(Exception):
    """Raised by ``write_many(batches, wait=False)`` when another writer holds the lock (nothing
    written): the group is written again on a thread with ``wait=True``, so the loop never waits."""


class GroupCommit:
    """Runs ``write_many(batches, wait)`` (one transaction for several tasks' rows) once per loop
    turn, for every batch of rows handed to ``write`` in that turn, groups in the order they came.
    When a joined transaction fails, each task's rows are tried alone, so a bad batch fails only
    its task."""

    def __init__(self, write_many: WriteMany) -> None:
        self._write_many = write_many
        self._waiting: Group = []
        self._behind: list[Group] = []  # groups after one that met a lock: written on a thread, in order
        self._catching_up: asyncio.Task[None] | None = None

    async def write(self, rows: Sequence[Row]) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._waiting.append((rows, done))
        if len(self._waiting) == 1:
            loop.call_soon(self._gather)
        await done

    def _gather(self) -> None:
        """At the end of the turn: a small group waits one turn more, for the rows of the answers
        that arrive meanwhile (an idle loop runs that turn at once)."""
        if len(self._waiting) < GATHER:
            asyncio.get_running_loop().call_soon(self._commit_turn)
        else:
            self._commit_turn()

    async def wait_idle(self) -> None:
        """Until every write handed over so far is committed (or failed)."""
        while self._waiting or self._catching_up is not None:
            pending = [done for _, done in self._waiting]
            await asyncio.wait([*pending, *([self._catching_up] if self._catching_up else [])])

    def _commit_turn(self) -> None:
        group, self._waiting = self._waiting, []
        if self._catching_up is None:
            try:
                _settle(group, self._write_group([rows for rows, _ in group], False))
                return
            except WouldWait:
                self._catching_up = asyncio.get_running_loop().create_task(self._catch_up())
        self._behind.append(group)

    async def _catch_up(self) -> None:
        try:
            while self._behind:
                group = self._behind.pop(0)
                _settle(group, await asyncio.to_thread(self._write_group, [rows for rows, _ in group], True))
        finally:
            self._catching_up = None

    def _write_group(self, batches: list[Sequence[Row]], wait: bool) -> list[Exception | None]:
        """Each batch's failure (None: written), all in one transaction when none fails."""
        try:
            self._write_many(batches, wait)
            return [None] * len(batches)
        except WouldWait:
            raise
        except Exception as exc:
            if len(batches) == 1:
                return [exc]
        results: list[Exception | None] = []
        for rows in batches:  # find the batch that failed; the others still land
            try:
                self._write_many([rows], True)  # (rare: a bad batch; it may wait for a lock)
                results.append(None)
            except Exception as alone:
                results.append(alone)
        return results


def _settle(group: Group, results: list[Exception | None]) -> None:
    for (_, done), error in zip(group, results, strict=True):
        if done.done():  # its task was cancelled meanwhile
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
