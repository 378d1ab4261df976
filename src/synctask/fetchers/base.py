"""The fetcher protocol: one method, one task in, rows (or a value) out, failures raised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..model import SyncTask


class Fetcher(Protocol):
    async def fetch(self, task: SyncTask) -> Any:
        """Run ``task``; return rows (a list of dicts, one dict, or None) or any value for jobs.

        Raise a ``synctask.TaskError`` subclass to say how it failed; other exceptions are
        classified (connection errors retry, timeouts retry, anything else is fatal)."""
        ...


@dataclass(frozen=True)
class Streamed:
    """What a stream task did: rows written and reconnects made."""

    rows: int
    reconnects: int
