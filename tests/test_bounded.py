"""Faults bounded: a vendor that trickles bytes forever fails its tasks at the default total
timeout; an answer larger than the dataset accepts fails its task, naming the option."""

from __future__ import annotations

import asyncio

from aiohttp import web

from synctask import SyncTaskExecutor, TaskEvent, parse_plan_text
from synctask.fetchers import http

PLAN = """
[vendors.api]
connector = "rest"
base_url = "{url}"

[datasets.items]
vendor = "api"
options = {{ path = "/{mode}", records = "data"{extra} }}
sink = {{ kind = "memory", key = ["id"] }}

[[plans]]
name = "items"
dataset = "items"
params = {{ i = [1, 2] }}
retry = {{ attempts = 1 }}
"""


async def trickle(request: web.Request) -> web.StreamResponse:
    answer = web.StreamResponse(headers={"Content-Type": "application/json"})
    await answer.prepare(request)
    for _ in range(100):  # a byte every 0.2 s: never idle long enough for a read timeout
        await answer.write(b" ")
        await asyncio.sleep(0.2)
    return answer


async def huge(request: web.Request) -> web.StreamResponse:
    chunked = request.query.get("chunked") == "1"
    answer = web.StreamResponse(headers={"Content-Type": "application/json"})
    if not chunked:
        answer.content_length = 3 * 1024 * 1024 + 12
    await answer.prepare(request)
    await answer.write(b'{"data": ["')
    for _ in range(3 * 16):
        await answer.write(b"x" * 65536)
    await answer.write(b'"]}')
    return answer


def run(mode: str, extra: str = "", monkeypatch=None) -> tuple[dict, list[str]]:
    async def go():
        app = web.Application()
        app.router.add_get("/trickle", trickle)
        app.router.add_get("/huge", huge)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        executor = SyncTaskExecutor(workers=2)
        executor.load(parse_plan_text(PLAN.format(url=f"http://127.0.0.1:{port}", mode=mode, extra=extra),
                                      "plans.toml", {}))
        messages: list[str] = []
        executor.listen(lambda e: messages.append(e.message) if isinstance(e, TaskEvent) and e.message else None)
        try:
            summary = await executor.run()
        finally:
            await runner.cleanup()
        return summary.plans["items"], messages

    return asyncio.run(go())


def test_a_vendor_that_trickles_bytes_fails_at_the_default_total_timeout(monkeypatch):
    monkeypatch.setattr(http, "DEFAULT_TIMEOUT", 1.0)  # 60 s in real life
    stats, messages = run("trickle")
    assert stats["failed"] == 2
    assert any("no answer within 1s" in m for m in messages), messages


def test_an_answer_above_the_cap_fails_its_task_naming_the_option():
    for query in ("", "?chunked=1"):
        stats, messages = run("huge" + query, ", max_answer_mb = 1")
        assert stats["failed"] == 2, messages
        assert any("above the 1 MB this dataset accepts; raise datasets.items.options.max_answer_mb" in m
                   for m in messages), messages
