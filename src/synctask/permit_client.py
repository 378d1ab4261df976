"""``synctask.Permits``: a program's requests counted in a running daemon's limits.

    async with synctask.Permits().take("tushare", dataset="daily") as permit:
        answer = await call_the_vendor(key=os.environ[permit.key])
        if answer.status == 429:
            permit.refused(retry_after=answer.headers.get("Retry-After"))

Each ``take`` waits until the daemon's limits let one more request go and counts it like one
of the daemon's own; leaving the block says the request was answered (a ``RateLimited`` raised
inside says it was refused, other exceptions that it failed), and its room comes back one window
later. The daemon and its token are found as the ``synctask`` commands find them.
"""

from __future__ import annotations

import json
import time
from types import TracebackType
from typing import Any

import aiohttp

from .errors import RateLimited
from .server.client import DaemonError, _token, daemon_url

__all__ = ["Permits", "PermitHeld"]


class PermitHeld:
    """A permit while its request is made: ``key`` names the variable holding the key to use."""

    def __init__(self, desk: Permits, answer: dict[str, Any]) -> None:
        self._desk = desk
        self.id: str = answer["id"]
        self.key: str | None = answer.get("key")
        self.vendor: str = answer["vendor"]
        self.dataset: str | None = answer.get("dataset")
        self.outcome: str | None = None
        self.retry_after: float | None = None
        self.answered_at: float | None = None

    def answered(self) -> None:
        """The answer began now (else: when the block is left)."""
        self.answered_at = time.time()

    def refused(self, retry_after: float | str | None = None) -> None:
        """The vendor refused the request (429): the daemon freezes the vendor for ``retry_after``."""
        self.outcome = "rate_limited"
        self.retry_after = float(retry_after) if retry_after not in (None, "") else None


class _Taking:
    def __init__(self, desk: Permits, body: dict[str, Any]) -> None:
        self._desk, self._body = desk, body
        self._permit: PermitHeld | None = None

    async def __aenter__(self) -> PermitHeld:
        answer = await self._desk._call("/api/permits", self._body, float(self._body["wait"]) + 30.0)
        self._permit = PermitHeld(self._desk, answer)
        return self._permit

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        permit = self._permit
        if permit is None:
            return
        outcome = permit.outcome
        if outcome is None:
            if isinstance(exc, RateLimited):
                outcome, permit.retry_after = "rate_limited", exc.retry_after
            else:
                outcome = "done" if exc is None else "error"
        body: dict[str, Any] = {"outcome": outcome}
        if permit.retry_after is not None:
            body["retry_after"] = permit.retry_after
        if permit.answered_at is not None:
            body["at"] = permit.answered_at
        await self._desk._call(f"/api/permits/{permit.id}/answered", body, 30.0)


class Permits:
    """A running daemon's permits (``url``: default ``$SYNCTASK_URL``, else the one running)."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = daemon_url(url)
        self._token = token or _token(self.url)
        self._session: aiohttp.ClientSession | None = None

    def take(self, vendor: str, dataset: str | None = None, *, weight: int | None = None,
             wait: float = 30.0, hold: float = 60.0) -> _Taking:
        """One permit for a request to ``vendor`` (in ``dataset``'s limits too): waits up to
        ``wait`` seconds for room; an unanswered permit counts as answered after ``hold``."""
        body: dict[str, Any] = {"vendor": vendor, "dataset": dataset, "wait": wait, "hold": hold}
        if weight is not None:
            body["weight"] = weight
        return _Taking(self, body)

    async def _call(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            async with self._session.post(f"{self.url}{path}", json=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as answer:
                text = await answer.text()
                said = json.loads(text or "{}")
                if answer.status >= 400:
                    raise DaemonError(f"the daemon at {self.url} answered {answer.status}: "
                                      f"{said.get('error') or answer.reason}")
                return dict(said)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise DaemonError(f"no synctask daemon answers at {self.url} ({type(exc).__name__}); start one with "
                              "`synctask serve PLANS.toml`, or point SYNCTASK_URL at it") from None
        except ValueError:
            raise DaemonError(f"what answers at {self.url} is not a synctask daemon; point SYNCTASK_URL at the "
                              "daemon") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Permits:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
