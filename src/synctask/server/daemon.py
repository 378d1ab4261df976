"""``synctask serve``: the executor and its control API in one process, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from collections.abc import Callable

from aiohttp import web

from ..errors import SyncError
from ..executor import RunSummary, SyncTaskExecutor
from .api import make_app
from .service import Service

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
                on_ready: Callable[[str], None], service: Service | None = None,
                on_reload: Callable[[str], None] | None = None) -> RunSummary:
    """Serve the API on ``host:port`` while the executor runs; both end on the first signal
    (in-flight tasks get the grace period, as ``synctask run`` gives them). SIGHUP reloads
    the plan file (``on_reload`` hears what it did, or why it did nothing)."""
    runner = web.AppRunner(make_app(executor, token=token, service=service), shutdown_timeout=1.0,
                           access_log=None)
    await runner.setup()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()
    if service is not None:
        def hangup() -> None:
            job = loop.create_task(_reload(service, on_reload or (lambda message: None)))
            reloads.add(job)
            job.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0] if runner.addresses else (host, port)
        on_ready(f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}")
        return await executor.run(until_idle=False, handle_signals=True)
    finally:
        if service is not None:
            loop.remove_signal_handler(signal.SIGHUP)
        await runner.cleanup()


async def _reload(service: Service, report: Callable[[str], None]) -> None:
    try:
        change = await service.reload()
    except SyncError as exc:
        report(f"reload: nothing changed: {exc}")
        return
    report("reload: " + ("; ".join(f"{kind} {', '.join(names)}" for kind, names in change.as_dict().items() if names)
                         or "the plan file has no changes"))
