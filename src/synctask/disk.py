"""What went wrong with a disk, said the way a person needs it: the cause by name (ENOSPC,
EROFS, EACCES, ...), whichever library raised it.

SQLite, DuckDB, pyarrow and the operating system each report a full disk in their own words
("database or disk is full", "IO Error: No space left on device", ``OSError(28)``); a user
needs one sentence that names the disk's problem, so a sink or the state store can say what
to free or fix.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

__all__ = ["disk_problem", "failure_words", "rollback_quietly"]

# The causes a person can act on, by errno; each said in words with its name.
_CAUSES = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "the file is larger than this system allows",
    errno.EIO: "the disk reported an input/output error",
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "it is a folder",
}
# How libraries without an errno say the same (SQLite's result codes, messages of DuckDB/pyarrow).
_SQLITE = {"SQLITE_FULL": errno.ENOSPC, "SQLITE_READONLY": errno.EROFS, "SQLITE_PERM": errno.EACCES,
           "SQLITE_IOERR": errno.EIO}


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in _CAUSES:
        return code
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        for prefix, mapped in _SQLITE.items():
            if name.startswith(prefix):
                return mapped
        if "disk is full" in str(exc):
            return errno.ENOSPC
    text = str(exc)
    for code in _CAUSES:
        if os.strerror(code) in text or f"[Errno {code}]" in text:
            return code
    if "disk is full" in text:
        return errno.ENOSPC
    cause = exc.__cause__ or exc.__context__
    return _errno_of(cause) if cause is not None and cause is not exc else None


def _errno_of_place(place: str | os.PathLike[str]) -> int | None:
    """What keeps a file from being written at ``place``, found by looking (for libraries that
    only say "unable to open"): a missing folder, a read-only disk, no permission."""
    path = Path(place)
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return errno.EROFS
    except OSError:
        return None
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return errno.EACCES
    return None if (path if path.is_dir() else path.parent).exists() else errno.ENOENT


def disk_problem(exc: BaseException, place: str | os.PathLike[str] | None = None) -> str:
    """``exc`` as a cause a person can act on: "no space left on the disk (ENOSPC)", or the
    library's own words when it is none of the known causes. ``place``: the file that was being
    written, looked at when the library did not say why."""
    code = _errno_of(exc)
    if code is None and place is not None:
        code = _errno_of_place(place)
    if code is not None:
        return f"{_CAUSES[code]} ({errno.errorcode[code]})"
    said = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {said}"


def failure_words(exc: BaseException, place: str | os.PathLike[str] | None = None) -> str:
    """The library's own words, then the cause by name when one is known:
    "OSError: [Errno 28] No space left on device; no space left on the disk (ENOSPC)"."""
    said = f"{type(exc).__name__}: {str(exc).strip() or type(exc).__name__}"
    cause = disk_problem(exc, place)
    return said if cause == said else f"{said}; {cause}"


def rollback_quietly(db: sqlite3.Connection) -> None:
    """Roll back if a transaction is open. After a full disk SQLite may have rolled back by
    itself; a second rollback's "no transaction is active" must not hide the real cause."""
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        pass
