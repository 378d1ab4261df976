"""``synctask serve``: the executor and its control API in one process, until SIGTERM/SIGINT."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from aiohttp import web

from ..executor import RunSummary, SyncTaskExecutor
from .api import make_app

__all__ = ["serve", "needs_token"]

LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")


def needs_token(host: str) -> bool:
    """Anything but this machine's own loopback address is reachable by others: it needs a token."""
    if host in LOCAL_HOSTS:
        return False
    try:
        return ipaddress.ip_address(host) != ipaddress.ip_address("127.0.0.1")
    except ValueError:
        return True


async def serve(executor: SyncTaskExecutor, host: str, port: int, token: str | None,
                on_ready: Callable[[str], None]) -> RunSummary:
    """Serve the API on ``host:port`` while the executor runs; both end on the first signal
    (in-flight tasks get the grace period, as ``synctask run`` gives them)."""
    runner = web.AppRunner(make_app(executor, token=token), shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0] if runner.addresses else (host, port)
        on_ready(f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}")
        return await executor.run(until_idle=False, handle_signals=True)
    finally:
        await runner.cleanup()
