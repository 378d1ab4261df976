"""The state's writer: task outcomes committed in batches, large ones off the event loop.

A turn's few outcomes are committed at once by the caller (a WAL commit of a few rows costs
less than waking a thread: each GIL hand-over between the two slowed the loop's socket calls);
a large batch, or any while the thread is still busy, is handed over (``submit``) and one
thread commits whatever was handed meanwhile in one transaction, many rows per statement. A
failed commit fails every later call too: outcomes after it were not recorded, and the run must
end (see ``delivery``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING

from .disk import rollback_quietly
from .upsert import insert_rows

if TYPE_CHECKING:
    from .store import TaskRecord

__all__ = ["Writer"]


class Writer:
    """Commits batches of task outcomes: small ones at once, large ones on a thread of its own,
    so the event loop never waits for a big transaction: each of the thread's transactions takes
    every batch handed to it meanwhile (the slower the disk, the larger the group commit). A
    failure is raised in the caller's thread (the thread's: at the next call)."""

    INLINE = 32  # outcomes committed at once in the caller's thread when the writer is idle
    MAX_BACKLOG = 50_000  # outcomes waiting for the writer before submit waits (about 15 MB)
    # Rows per INSERT, 10 parameters each, within SQLite's limit (999 before 3.32, 32,766 since).
    # Large on purpose: while the event loop runs, each time this thread takes the GIL back (after
    # every statement) it waits up to the interpreter's switch interval (5 ms).
    _ROWS = 3_200  # (fewer where SQLite is older than 3.32: insert_rows keeps within its limit)

    def __init__(self, db: sqlite3.Connection, path: str, unwritable: Callable[[str, BaseException], Exception]
                 ) -> None:
        self._db = db
        self._path = path
        self._unwritable = unwritable  # the error to keep when a commit fails (it names the path)
        self._changed = threading.Condition()
        self._batches: list[list[TaskRecord]] = []
        self._counts: dict[str, str] = {}  # run id → its counts (JSON), updated in the same transaction
        self._queued = 0  # outcomes in _batches
        self._busy = False
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, batch: list[TaskRecord], counts: Sequence[tuple[str, str]] = ()) -> None:
        """Commit ``batch`` (and runs' ``counts``: (JSON, run id) pairs): at once, in the caller's
        thread, when it is small and the writer has nothing in hand (a hand-over would cost more
        than the commit: the two threads' GIL hand-overs slowed every socket call of the loop);
        else queued for the writer's next transaction. When ``MAX_BACKLOG`` outcomes are already
        waiting (the disk is slower than the tasks), wait until the writer takes them: memory
        stays bounded, and the run goes at the pace the disk allows."""
        with self._changed:
            self._raise_error()
            if len(batch) <= self.INLINE and not self._batches and not self._busy:
                self._commit_now(batch, counts)  # (holding the lock: the writer cannot start meanwhile)
                return
            self._batches.append(batch)
            for summary, run_id in counts:
                self._counts[run_id] = summary
            self._queued += len(batch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="synctask-store-writer", daemon=True)
                self._thread.start()
            self._changed.notify_all()
            while self._queued > self.MAX_BACKLOG and self._error is None:
                self._changed.wait()

    @contextlib.contextmanager
    def idle(self) -> Iterator[None]:
        """Wait until every batch handed over is committed, and keep the writer out meanwhile."""
        with self._changed:
            while self._batches or self._busy:
                self._changed.wait()
            self._raise_error()
            yield

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._changed:
            self._raise_error()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._batches and not self._closed:
                    self._changed.wait()
                if not self._batches:
                    return
                batches, self._batches = self._batches, []
                counts, self._counts = self._counts, {}
                self._queued = 0
                self._busy = True
                self._changed.notify_all()
            try:
                self._transaction([record for batch in batches for record in batch],
                                  [(summary, run_id) for run_id, summary in counts.items()])
            except BaseException as exc:  # kept for the caller: this thread has no one to tell
                with self._changed:
                    self._keep(exc)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _commit_now(self, batch: list[TaskRecord], counts: Sequence[tuple[str, str]]) -> None:
        """A small batch committed in the caller's thread; a failure is kept like the writer's."""
        try:
            self._transaction(batch, counts)
        except BaseException as exc:
            raise self._keep(exc) from None

    def _keep(self, exc: BaseException) -> BaseException:
        """Keep a failed commit's error (SQLite's named by the path) for every later call."""
        self._error = self._unwritable(self._path, exc) if isinstance(exc, sqlite3.Error) else exc
        return self._error

    def _transaction(self, records: list[TaskRecord], counts: Sequence[tuple[str, str]]) -> None:
        self._db.execute("BEGIN")
        try:
            self._insert(records)
            if counts:
                self._db.executemany("UPDATE runs SET summary = ? WHERE id = ?", counts)
            self._db.execute("COMMIT")
        except BaseException:
            rollback_quietly(self._db)  # after a full disk SQLite may have rolled back itself
            raise

    def _insert(self, records: list[TaskRecord]) -> None:
        """Insert ``records``, up to ``_ROWS`` per statement (multi-row VALUES): ``executemany``
        would hand the GIL back and take it again after every row, and with the event loop busy
        each take waits, so the writer would crawl while the loop runs."""
        insert_rows(self._db, _INSERT, len(_COLUMNS), list(chain.from_iterable(records)), self._ROWS)

    def _raise_error(self) -> None:
        """A failed commit fails every later call too: outcomes after it were not recorded."""
        if self._error is not None:
            raise self._error


# TaskRecord's fields, in its order
_COLUMNS = ("task_id", "plan", "run_id", "state", "attempts", "message", "at", "follow_up", "params", "rows")
_INSERT = f"INSERT OR REPLACE INTO tasks ({', '.join(_COLUMNS)})"
