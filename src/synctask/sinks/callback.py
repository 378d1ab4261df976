"""Hand rows to client code: a function (sync or async) called once per task's rows."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from .base import Row


class CallbackSink:
    """Durable when the callback returns; idempotency is the callback's to keep."""

    def __init__(self, callback: Callable[[Sequence[Row]], Any]) -> None:
        self.callback = callback

    async def write(self, rows: Sequence[Row]) -> None:
        result = self.callback(rows)
        if inspect.isawaitable(result):
            await result

    async def close(self) -> None:
        return None
