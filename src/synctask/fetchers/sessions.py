"""aiohttp client sessions, one per vendor, made on first use (aiohttp loads then, so a plan
file is checked without it). Each session sends a request at most once per admission
(``send_once``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

__all__ = ["SessionPool"]


class SessionPool:
    """Client sessions by vendor, made on first use inside the running loop, closed together.
    A request fails after ``read_timeout`` seconds without a byte (idle), and after its task's
    timeout (default ``DEFAULT_TIMEOUT``) in all, however slowly a vendor trickles bytes."""

    def __init__(self, connect_timeout: float = 10.0, read_timeout: float = 30.0, limit: int = 100) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.limit = limit
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def get(self, vendor: str) -> aiohttp.ClientSession:
        session = self._sessions.get(vendor)
        if session is None or session.closed:
            import aiohttp

            from .send_once import send_once

            timeout = aiohttp.ClientTimeout(sock_connect=self.connect_timeout, sock_read=self.read_timeout)
            connector = aiohttp.TCPConnector(limit=self.limit)
            session = aiohttp.ClientSession(timeout=timeout, connector=connector,
                                            headers={"User-Agent": "synctask"}, middlewares=(send_once,))
            self._sessions[vendor] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
