"""Rows of a large JSON answer, read as a stream: memory follows the batch, not the answer.

``json.loads`` of a 250 MB answer builds every row as a Python dict at once (several times the
answer's size: 4 GB was seen for 250 MB). Above ``STREAM_ABOVE`` the REST connector instead
keeps the answer's bytes and hands out its records in batches, parsed by ijson's C backend as
they are needed; the executor writes each batch to the sink before the next is parsed. The
records are counted first (one pass that keeps nothing), so pagination still knows the page's
size, and the cursor of the next page is read by its own pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ijson

from ..errors import TransientError

__all__ = ["STREAM_ABOVE", "BATCH", "RowStream", "first_at", "item_prefix"]

STREAM_ABOVE = 8 * 1024 * 1024  # answers larger than this (bytes) are read as a stream
BATCH = 10_000  # rows handed to the sink at a time


def item_prefix(path: str) -> str:
    """ijson's prefix of the items of the list at ``path`` (``data.items`` → ``data.items.item``)."""
    parts = [part for part in path.split(".") if part]
    return ".".join([*parts, "item"])


def first_at(body: bytes, path: str) -> tuple[bool, Any]:
    """Whether the answer has a value at ``path``, and that value (a small one: a cursor)."""
    prefix = ".".join(part for part in path.split(".") if part)
    try:
        for value in ijson.items(body, prefix, use_float=True):
            return True, value
    except ijson.JSONError as exc:
        raise TransientError(f"malformed REST response: {exc}") from None
    return False, None


class RowStream:
    """The records at ``path`` of ``body``, counted and checked once, then handed out in
    batches. Holds only the answer's bytes; picklable (it travels back from a Ray node)."""

    def __init__(self, body: bytes, path: str) -> None:
        self.body = body
        self.path = path
        self._prefix = item_prefix(path)
        self._count = sum(1 for _ in self._records())

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._records()

    def batches(self, size: int = BATCH) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        for row in self._records():
            batch.append(row)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _records(self) -> Iterator[dict[str, Any]]:
        where = self.path or "the top"
        try:
            for index, item in enumerate(ijson.items(self.body, self._prefix, use_float=True)):
                if not isinstance(item, dict):
                    raise TransientError(f"malformed REST response: record {index} at {where!r} is "
                                         f"{type(item).__name__}, not an object")
                yield item
        except ijson.JSONError as exc:
            raise TransientError(f"malformed REST response: {exc}") from None
