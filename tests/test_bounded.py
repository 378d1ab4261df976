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


def test_a_full_disk_stops_every_plan_of_the_dataset_at_once_naming_the_place(tmp_path):
    import errno

    from synctask import Dataset, ParamGrid, RetryPolicy, SyncPlan, Vendor, parse_schedule

    calls: list[int] = []

    class FullDisk:
        path = tmp_path / "data" / "bars.parquet"

        async def write(self, rows):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

        async def close(self):
            return None

    async def fetch(i):
        calls.append(i)
        await asyncio.sleep(0.01)
        return [{"i": i}]

    async def go():
        executor = SyncTaskExecutor(workers=4)
        executor.add_vendor(Vendor("v", "python"))
        executor.add_dataset(Dataset("bars", "v", "bars"), fetch=fetch, sink=FullDisk())
        for name in ("a", "b"):
            executor.add_plan(SyncPlan(name, "bars", ParamGrid.from_spec({"i": {"from": 0, "to": 99}}),
                                       parse_schedule("manual"), retry=RetryPolicy(attempts=5)))
        messages: list[str] = []
        executor.listen(lambda e: messages.append(e.message) if isinstance(e, TaskEvent) and e.message else None)
        return await executor.run(), messages

    summary, messages = asyncio.run(go())
    assert summary.plans["a"]["state"] == summary.plans["b"]["state"] == "failed"
    assert len(calls) <= 8, f"{len(calls)} vendor requests spent on rows that could not be stored"
    assert any(f"synctask could not store the rows: writing to {tmp_path}/data/bars.parquet failed: "
               "OSError: [Errno 28] No space left on device" in m and "stopped plan a, b" in m
               and "free space or fix the folder's permissions" in m for m in messages), messages


def test_a_read_only_data_folder_exits_1_with_the_place_and_the_resume_command(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "tasks.py").write_text("async def fetch(i):\n    return [{'i': i}]\n")
    (tmp_path / "plans.toml").write_text('''
[vendors.local]
connector = "python:tasks:fetch"

[datasets.numbers]
vendor = "local"
api = "python:tasks:fetch"
sink = { kind = "sqlite", path = "/proc/synctask-read-only/data.db", key = ["i"] }

[[plans]]
name = "numbers"
dataset = "numbers"
params = { i = { from = 0, to = 49 } }
''')
    result = subprocess.run([sys.executable, "-m", "synctask.cli", "run", str(tmp_path / "plans.toml"), "--plain"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    shown = result.stdout + result.stderr
    assert result.returncode == 1, shown
    assert "Traceback" not in shown
    assert "synctask could not store the rows: writing to /proc/synctask-read-only/data.db failed" in shown
    assert "resume with: synctask run" in shown
