"""Rows into a JSON Lines file, idempotent by key.

The file is a log: a row whose key is new, or whose content changed, is appended; a row seen
before with the same content is not written again. When the sink closes (each run's end) and
when it opens, the file is compacted to the last version of each key (write, fsync, rename), so
after any run the file holds each key once. ``write`` returns once the lines are flushed to the
operating system, which survives the process being killed.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import Row, check_keys, require_key, row_key


class JsonlSink:
    def __init__(self, path: str | Path, key: Sequence[str]) -> None:
        self.path = Path(path)
        self.key = require_key(key, f"the jsonl sink {path}")
        self._rows: dict[tuple[Any, ...], str] = {}
        self._dirty = False
        self._file: Any = None
        self._lock = asyncio.Lock()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with self.path.open(encoding="utf-8") as existing:
                for line in existing:
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a crash: its task runs again
                    if isinstance(row, dict):
                        self._rows[row_key(row, self.key)] = line.rstrip("\n")
                        self._dirty = True
            self._compact()
        self._file = self.path.open("a", encoding="utf-8")

    async def write(self, rows: Sequence[Row]) -> None:
        check_keys(rows, self.key)  # nothing is written under a missing or NULL key
        async with self._lock:
            if self._file is None:
                self._open()
            lines = []
            for row in rows:
                line = json.dumps(row, ensure_ascii=False, sort_keys=True, default=str)
                key = row_key(row, self.key)
                if self._rows.get(key) == line:
                    continue
                if key in self._rows:
                    self._dirty = True
                self._rows[key] = line
                lines.append(line + "\n")
            if lines:
                self._file.writelines(lines)
                self._file.flush()

    def _compact(self) -> None:
        if not self._dirty:
            return
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        with temporary.open("w", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in self._rows.values())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        self._dirty = False

    async def close(self) -> None:
        async with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
                self._dirty = True
                self._compact()
            self._rows.clear()
