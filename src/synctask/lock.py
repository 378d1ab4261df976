"""One writer per state: an exclusive lock beside the state file, held while a process uses it.

Two processes on the same state would each fetch every task (neither sees the other's work
until it is recorded) and together send twice the allowed rate. The lock is ``flock`` on
``<state>.lock``: the operating system drops it when its holder dies, even by ``kill -9``, so a
stale lock never blocks anyone. The lock lives beside the state's real path (symlinks resolved),
so two names of one file share one lock. The holder writes its PID, start time and command into the file,
so the one refused can say who holds it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from .errors import SyncError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; the state is not guarded there
    fcntl = None  # type: ignore[assignment]

__all__ = ["StateInUse", "StateLock", "holder_of"]


class StateInUse(SyncError):
    """Another process holds the state file; ``holder`` says which (pid, since, command)."""

    def __init__(self, state: Path, holder: dict[str, object]) -> None:
        self.state = state
        self.holder = holder
        super().__init__(f"{state} is in use by another synctask process ({describe(holder)}); "
                         "wait for it to end, stop it (Ctrl-C in its terminal, or kill -INT its PID), "
                         "or pass --wait to start as soon as it ends")


def describe(holder: dict[str, object]) -> str:
    pid = holder.get("pid", "?")
    since = holder.get("since")
    when = datetime.fromtimestamp(float(since)).strftime("%Y-%m-%d %H:%M:%S") if isinstance(
        since, (int, float)) else "an unknown time"
    command = holder.get("command")
    return f"PID {pid}, since {when}" + (f": {command}" if command else "")


class StateLock:
    """Hold ``<state>.lock`` exclusively. ``wait``: poll until the holder ends (``on_wait`` is
    told once who is being waited for); else raise ``StateInUse`` at once."""

    def __init__(self, state: str | Path, *, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None, poll: float = 0.2) -> None:
        self.state = Path(state)
        real = self.state.resolve()  # one file, one lock: a symlink or another spelling names the same
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None
        if fcntl is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        told = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = _read(fd)
                    if not wait:
                        raise StateInUse(self.state, holder) from None
                    if on_wait is not None and not told:
                        on_wait(f"waiting for {self.state}: in use by {describe(holder)}")
                        told = True
                    time.sleep(poll)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.time(),
                                  "command": " ".join(os.path.basename(a) if i == 0 else a
                                                      for i, a in enumerate(sys.argv))}).encode(), 0)
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Let the next process in (the file stays: removing it would race with a new holder)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def holder_of(state: str | Path) -> dict[str, object] | None:
    """Who holds the state's lock now (pid, since, command), read without taking it; None when
    no live process does (the lock file is emptied at release; a killed holder's pid is gone)."""
    real = Path(state).resolve()
    try:
        fd = os.open(real.with_name(real.name + ".lock"), os.O_RDONLY)
    except OSError:
        return None
    try:
        holder = _read(fd)
    finally:
        os.close(fd)
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return holder


def _read(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
