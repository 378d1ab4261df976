"""HTTP on aiohttp: one pooled client session per vendor (``sessions``), connect and read
timeouts, compressed responses (aiohttp decodes gzip and deflate), and the task's cancellation
honoured mid-request. A request reaches the vendor at most once per admission (see ``sessions``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..connectors.base import Connector, Observation, Response
from ..connectors.streamed import STREAM_ABOVE
from ..deadlines import Deadlines
from ..errors import InvalidRequest
from ..model import Dataset, SyncTask, Vendor

if TYPE_CHECKING:
    import aiohttp

    from .sessions import SessionPool

__all__ = ["HttpFetcher", "AnswerTooLarge", "DEFAULT_TIMEOUT", "DEFAULT_MAX_ANSWER_MB"]


DEFAULT_TIMEOUT = 60.0  # seconds for a whole request when the plan sets no timeout
DEFAULT_MAX_ANSWER_MB = 64  # an answer above this fails its task instead of filling memory


class AnswerTooLarge(InvalidRequest):
    """The answer is larger than the dataset allows (``options.max_answer_mb``)."""


class HttpFetcher:
    """Sends the connector's request, reports the vendor's own counts, returns parsed rows.

    ``on_answered(task, at)`` is told the instant the answer's headers arrived (just after its
    first byte): the vendor stamped the request before then, so the limiter may start the
    request's window clock there. Connection failures and timeouts surface as aiohttp / asyncio
    exceptions, which the executor classifies as network and timeout outcomes; vendor answers
    are classified by the connector.
    """

    def __init__(self, vendor: str, connector: Connector, sessions: SessionPool,
                 observe: Callable[[SyncTask, Observation, float], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 on_answered: Callable[[SyncTask, float], None] | None = None,
                 max_answer_mb: float = DEFAULT_MAX_ANSWER_MB, where: str = "the dataset") -> None:
        self.on_answered = on_answered
        self.max_answer = int(max_answer_mb * 1024 * 1024)
        self.where = where
        self.vendor = vendor
        self.connector = connector
        self.sessions = sessions
        self.observe = observe
        self.clock = clock
        self._default_timeout = Deadlines(DEFAULT_TIMEOUT)

    async def fetch(self, task: SyncTask) -> Any:
        request = self.connector.request(task)
        session = self.sessions.get(self.vendor)
        # The plan's timeout is the executor's to apply; without one, this default bounds the request.
        if task.timeout is None:
            with self._default_timeout.start():
                response = await self._send(task, session, request)
        else:
            response = await self._send(task, session, request)
        now = self.clock()
        if self.observe is not None:
            for observation in self.connector.observations(response):
                self.observe(task, observation, now)
        if len(response.body) > STREAM_ABOVE:  # counting a large answer's records: off the event loop
            return await asyncio.to_thread(self.connector.parse, response, task, now)
        return self.connector.parse(response, task, now)

    async def _send(self, task: SyncTask, session: aiohttp.ClientSession, request: Any) -> Response:
        async with session.request(request.method, request.url, params=request.params, json=request.json,
                                   headers=request.headers) as answer:
            if self.on_answered is not None:
                self.on_answered(task, self.clock())
            body = await self._read(answer)
            return Response(answer.status, answer.headers, body)  # (aiohttp's headers: found in any case)

    async def _read(self, answer: aiohttp.ClientResponse) -> bytes:
        """The body, refused once it grows past the dataset's cap (never all read first)."""
        limit = self.max_answer
        if answer.content_length is not None:
            if answer.content_length > limit:
                self._too_large(answer.content_length)
            if "Content-Encoding" not in answer.headers:
                return await answer.read()  # its length is said, within the cap, and not to be inflated
        body = bytearray()
        async for chunk in answer.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > limit:
                self._too_large(None)
        return bytes(body)

    def _too_large(self, size: int | None) -> None:
        said = f"{size / 1048576:,.1f} MB" if size is not None else "more"
        raise AnswerTooLarge(f"the answer is {said}, above the {self.max_answer / 1048576:g} MB this dataset "
                             f"accepts; raise {self.where}.options.max_answer_mb if that is expected")


def http_fetcher(vendor: Vendor, dataset: Dataset, sessions: SessionPool,
                 observe: Callable[[SyncTask, Observation, float], None] | None,
                 clock: Callable[[], float], on_answered: Callable[[SyncTask, float], None] | None) -> HttpFetcher:
    """The fetcher of a dataset served by one of the HTTP connectors (here, or on a Ray node)."""
    from ..connectors import CONNECTORS

    connector = CONNECTORS[vendor.connector](vendor, dataset, dataset.errors)
    return HttpFetcher(vendor.name, connector, sessions, observe, clock, on_answered,
                       max_answer_mb=float(dataset.options.get("max_answer_mb", DEFAULT_MAX_ANSWER_MB)),
                       where=f"datasets.{dataset.name}")
