"""Runtime files: how the ``synctask`` commands find a running daemon and its token by themselves.

As Jupyter's ``jpserver-PID.json``: each daemon writes ``daemon-PID.json`` (its address, token,
plan file and state) into the user's runtime folder, readable by the user alone (folder 0700,
file 0600), and removes it when it stops. A file whose process is gone is stale and ignored.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["DaemonInfo", "runtime_dir", "write", "remove", "running", "find"]


@dataclass(frozen=True)
class DaemonInfo:
    url: str
    token: str
    pid: int
    plan_file: str
    state: str
    started: float


def runtime_dir() -> Path:
    """``$SYNCTASK_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/synctask``, else ``~/.local/share/synctask/runtime``."""
    given = os.environ.get("SYNCTASK_RUNTIME_DIR")
    if given:
        return Path(given)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "synctask"
    return Path.home() / ".local" / "share" / "synctask" / "runtime"


def write(url: str, token: str, plan_file: str, state: str) -> Path:
    """This process's runtime file, created readable by its user alone (never widened later)."""
    folder = runtime_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    path = folder / f"daemon-{os.getpid()}.json"
    path.unlink(missing_ok=True)  # a previous process of this pid: its file is stale
    info = DaemonInfo(url, token, os.getpid(), plan_file, state, time.time())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(info), out)
    return path


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running() -> list[DaemonInfo]:
    """The daemons of this user that are running now, newest first."""
    found = []
    try:
        files = sorted(runtime_dir().glob("daemon-*.json"))
    except OSError:
        return []
    for path in files:
        try:
            info = DaemonInfo(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
        if _alive(info.pid):
            found.append(info)
    return sorted(found, key=lambda info: -info.started)


def _same(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        return url.rstrip("/").lower().replace("://localhost:", "://127.0.0.1:")

    return norm(a) == norm(b)


def find(url: str | None) -> DaemonInfo | None:
    """The running daemon at ``url``; without one, the only daemon running (None when none or
    several run: the caller then needs ``--url``)."""
    daemons = running()
    if url is not None:
        return next((info for info in daemons if _same(info.url, url)), None)
    return daemons[0] if len(daemons) == 1 else None
