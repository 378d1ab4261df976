"""HTTP on aiohttp: one pooled client session per vendor, connect and read timeouts, compressed
responses (aiohttp decodes gzip and deflate), and the task's cancellation honoured mid-request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ..connectors.base import Connector, Observation, Response
from ..model import SyncTask

__all__ = ["HttpFetcher", "SessionPool"]


class SessionPool:
    """Client sessions by vendor, made on first use inside the running loop, closed together."""

    def __init__(self, connect_timeout: float = 10.0, read_timeout: float = 60.0, limit: int = 100) -> None:
        self.timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)
        self.limit = limit
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._trace = aiohttp.TraceConfig()
        self._trace.on_request_headers_sent.append(_headers_sent)

    def get(self, vendor: str) -> aiohttp.ClientSession:
        session = self._sessions.get(vendor)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self.limit)
            session = aiohttp.ClientSession(timeout=self.timeout, connector=connector,
                                            headers={"User-Agent": "synctask"}, trace_configs=[self._trace])
            self._sessions[vendor] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


class HttpFetcher:
    """Sends the connector's request, reports the vendor's own counts, returns parsed rows.

    Connection failures and timeouts surface as aiohttp / asyncio exceptions, which the executor
    classifies as network and timeout outcomes; vendor answers are classified by the connector.
    """

    def __init__(self, vendor: str, connector: Connector, sessions: SessionPool,
                 observe: Callable[[SyncTask, Observation, float], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 on_sent: Callable[[SyncTask, float], None] | None = None) -> None:
        self.on_sent = on_sent
        self.vendor = vendor
        self.connector = connector
        self.sessions = sessions
        self.observe = observe
        self.clock = clock

    async def fetch(self, task: SyncTask) -> Any:
        request = self.connector.request(task)
        session = self.sessions.get(self.vendor)
        async with session.request(request.method, request.url, params=request.params, json=request.json,
                                   headers=dict(request.headers),
                                   trace_request_ctx=_Sent(self, task)) as answer:
            body = await answer.read()
            response = Response(answer.status, dict(answer.headers), body)
        now = self.clock()
        if self.observe is not None:
            for observation in self.connector.observations(response):
                self.observe(task, observation, now)
        return self.connector.parse(response, task, now)


class _Sent:
    """What the trace hook needs to tell the limiter when a request really left."""

    __slots__ = ("fetcher", "task")

    def __init__(self, fetcher: HttpFetcher, task: SyncTask) -> None:
        self.fetcher = fetcher
        self.task = task


async def _headers_sent(session: aiohttp.ClientSession, ctx: Any, params: Any) -> None:
    sent = getattr(ctx, "trace_request_ctx", None)
    if isinstance(sent, _Sent) and sent.fetcher.on_sent is not None:
        sent.fetcher.on_sent(sent.task, sent.fetcher.clock())
