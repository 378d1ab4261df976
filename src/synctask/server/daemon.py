"""``synctask serve``: the executor and its control API in one process, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from ..errors import SyncError
from ..executor import RunSummary, SyncTaskExecutor
from . import runtime
from .api import make_app
from .guard import Policy
from .service import Service

__all__ = ["serve", "Served", "new_token"]


def new_token() -> str:
    """A token for a daemon started without ``SYNCTASK_API_TOKEN``: 256 random bits."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Served:
    """Where the daemon listens and how its owner reaches it (told once it is bound)."""

    url: str
    runtime_file: str | None  # None when it could not be written: the reason is in ``problem``
    problem: str | None = None


async def serve(executor: SyncTaskExecutor, host: str, port: int, policy: Policy,
                on_ready: Callable[[Served], None], service: Service | None = None,
                on_reload: Callable[[str], None] | None = None, plan_file: str = "", state: str = "") -> RunSummary:
    """Serve the API on ``host:port`` while the executor runs; both end on the first signal
    (in-flight tasks get the grace period, as ``synctask run`` gives them). SIGHUP reloads
    the plan file (``on_reload`` hears what it did, or why it did nothing). While it serves,
    its address and token are in a runtime file only its user can read."""
    runner = web.AppRunner(make_app(executor, policy, service=service), shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()
    if service is not None:
        def hangup() -> None:
            job = loop.create_task(_reload(service, on_reload or (lambda message: None)))
            reloads.add(job)
            job.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, hangup)
    written = None
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise SyncError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; choose another --port or "
                            "--host") from None
        bound = runner.addresses[0] if runner.addresses else (host, port)
        url = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}"
        if host in ("0.0.0.0", "::"):
            url = f"http://127.0.0.1:{bound[1]}"  # how this machine's own commands reach it
        try:
            written = runtime.write(url, policy.token, plan_file, state)
            on_ready(Served(url, str(written)))
        except OSError as exc:
            on_ready(Served(url, None, f"cannot write its runtime file in {runtime.runtime_dir()} "
                                       f"({exc.strerror or exc}): the commands need SYNCTASK_API_TOKEN"))
        return await executor.run(until_idle=False, handle_signals=True)
    finally:
        if written is not None:
            runtime.remove(written)
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
