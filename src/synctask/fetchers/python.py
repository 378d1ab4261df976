"""Python callables as tasks: ``async def f(**params)`` (or a plain function, run in a thread)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from ..model import SyncTask


def resolve_callable(spec: str) -> Callable[..., Any]:
    """``"python:pkg.module:function"`` → the function; ValueError saying what is wrong."""
    body = spec.removeprefix("python:")
    module_name, sep, attr = body.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'python:package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for {spec!r}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no {attr!r} (from {spec!r})") from None
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")
    return target


class PythonFetcher:
    """Calls ``fn(**task.params)``; coroutine functions are awaited, plain ones run in a thread
    (a thread cannot be interrupted: a cancelled plain function finishes in the background)."""

    def __init__(self, fn: Callable[..., Any], *, single_argument: bool = False) -> None:
        self.fn = fn
        self.single_argument = single_argument
        self.is_async = inspect.iscoroutinefunction(fn)

    async def fetch(self, task: SyncTask) -> Any:
        if self.single_argument:
            args: tuple[Any, ...] = (task.params.get("item", task.params),)
            kwargs: dict[str, Any] = {}
        else:
            args, kwargs = (), dict(task.params)
        if self.is_async:
            return await self.fn(*args, **kwargs)
        result = await asyncio.to_thread(self.fn, *args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
