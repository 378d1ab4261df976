"""Outcomes are committed a few milliseconds after they are recorded, together: no task waits for
it, a kill -9 forgets at most those last milliseconds, and a fast run pays for a commit per few
milliseconds instead of one per loop turn."""

from __future__ import annotations

import asyncio
import sqlite3
import time

from synctask import Limiter
from synctask.catalog import Catalog
from synctask.delivery import COMMIT_WITHIN, Delivery
from synctask.store import TaskRecord


def committed(path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])


def test_outcomes_recorded_within_a_few_milliseconds_share_one_commit(tmp_path):
    path = tmp_path / "state.db"
    delivery = Delivery(Catalog(tmp_path), Limiter(), time.time, None, path)
    commits = []

    async def main() -> None:
        delivery.loop = asyncio.get_running_loop()
        store = delivery.store
        flush = store.flush
        store.flush = lambda: (commits.append(len(store._pending)), flush())  # type: ignore[method-assign]
        for turn in range(5):  # five loop turns, two outcomes each
            for i in range(2):
                delivery.record(TaskRecord(f"p:{turn}-{i}", "p", "p:r", "done", 0, None, 1.0, rows=3))
            await asyncio.sleep(0)
        assert committed(path) == 0  # not yet: the commit waits for the others
        started = time.monotonic()
        while committed(path) < 10:
            assert time.monotonic() - started < 5.0, "never committed"
            await asyncio.sleep(0.001)
        assert time.monotonic() - started >= COMMIT_WITHIN / 2

    asyncio.run(main())
    assert commits == [10]  # one commit for all ten
    delivery.close()
