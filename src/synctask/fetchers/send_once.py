"""Every request reaches the vendor at most once per admission.

aiohttp re-sends an idempotent request by itself when a kept-alive connection turns out to be
closed (RFC 9112 allows it), and that second copy would reach the vendor without the limiter
having admitted it. This client middleware turns such a drop into an error that is not re-sent,
so it comes back to the scheduler as a network failure and is retried (admitted again) there.
"""

from __future__ import annotations

from typing import Any

import aiohttp

__all__ = ["send_once", "ConnectionDropped"]


class ConnectionDropped(aiohttp.ClientConnectionError):
    """The connection closed or reset before the answer came; the request is not re-sent here
    (the vendor may have counted it): the scheduler retries it under the limits."""


async def send_once(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
    """Client middleware: aiohttp's own retry loop re-sends only on these two errors, so
    re-raising them as ``ConnectionDropped`` (another ``ClientConnectionError``) ends it."""
    try:
        response: aiohttp.ClientResponse = await handler(request)
        return response
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise ConnectionDropped(f"the connection dropped before the answer ({type(exc).__name__}: {exc})") from exc
