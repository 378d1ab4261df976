"""WAL checkpoints on a thread of their own, so commits made on the event loop never wait for a sync.

In WAL mode with ``synchronous=NORMAL`` a commit appends to the ``-wal`` file (the page cache,
which survives the process being killed) and syncs nothing; only a checkpoint, which copies the
WAL back into the database, syncs the disk. SQLite runs one inside whichever commit grows the
WAL past 1,000 pages, on the thread that committed. The state store and the SQLite sink commit
on the event loop (a thread per commit cost more CPU than the commit: every hand-over of the GIL
wakes two threads), so they turn that off and let this thread checkpoint, with its own
connection, at most once per ``every`` seconds when something was committed since.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

__all__ = ["Checkpoints"]

_log = logging.getLogger("synctask")


def commit_without_checkpoints(db: sqlite3.Connection) -> None:
    """Set a connection up to commit without ever checkpointing itself; the WAL file is cut back
    to nothing each time a checkpoint has emptied it (or it would keep its largest size)."""
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("PRAGMA journal_size_limit=0")


class Checkpoints:
    """Checkpoints the database at ``path`` (``PASSIVE``: never blocks the writer) on a daemon
    thread, after ``committed()`` said there is something to copy; at most once per ``every`` s."""

    def __init__(self, path: str, every: float = 1.0) -> None:
        self.path = path
        self.every = every
        self._due = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """Something was committed (cheap: called after every commit)."""
        self._due = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="synctask-checkpoints", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the thread (closing the last connection checkpoints whatever is left)."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._closed.clear()

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            while not self._closed.wait(self.every):
                if not self._due:
                    continue
                self._due = False
                try:
                    if db is None:
                        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                        db.execute("PRAGMA busy_timeout=5000")
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the commits are in the WAL: nothing is lost, the next one tries again
                    _log.debug("checkpoint of %s failed: %s", self.path, exc)
                    self._due = True
        finally:
            if db is not None:
                db.close()
