"""How a task talks to its vendor. Python callables now; HTTP and WebSocket come with the vendor work."""

from .base import Fetcher
from .python import PythonFetcher, resolve_callable

__all__ = ["Fetcher", "PythonFetcher", "resolve_callable"]
