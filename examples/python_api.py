"""synctask from code: a plan of Python tasks under limits, live events, and the job API.

    python examples/python_api.py [FOLDER]      # writes FOLDER/prices.db and FOLDER/state.db

Run it twice: the second run skips every task the first finished.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from synctask import (
    Concurrency,
    Dataset,
    InvalidRequest,
    JobFailed,
    ParamGrid,
    Quota,
    SQLiteSink,
    SyncPlan,
    SyncTaskExecutor,
    TransientError,
    Vendor,
    parse_schedule,
)
from synctask.events import FreezeEvent, PlanEvent


async def daily_price(symbol: str, day: object) -> list[dict[str, object]]:
    """One task: fetch a day's price. Raise synctask's errors to say what went wrong."""
    await asyncio.sleep(0.01)                          # stands in for a network call
    if symbol == "NOPE":
        raise InvalidRequest(f"unknown symbol {symbol!r}")      # fails this task; the plan goes on
    if random.random() < 0.05:
        raise TransientError("503 from the vendor")             # retried with backoff
    return [{"symbol": symbol, "day": str(day), "close": round(100 + random.random(), 2)}]


def square(x: int) -> int:
    """A mini-task of the job below: any function, sync or async."""
    return x * x


async def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ex = SyncTaskExecutor(workers=8, state=folder / "state.db")

    def show(event: object) -> None:                    # every event, as it happens
        if isinstance(event, PlanEvent):
            print(f"plan {event.plan}: {event.state}")
        elif isinstance(event, FreezeEvent) and event.new:
            print(f"froze {event.scope}: {event.message}")

    ex.listen(show)
    ex.add_vendor(Vendor("prices", "python", limits=(Quota(100, 1.0),)))       # 100 requests per second
    ex.add_dataset(Dataset("daily", "prices", "daily", (Quota(50, 1.0), Concurrency(4))),
                   fetch=daily_price, sink=SQLiteSink(folder / "prices.db", "daily", ["symbol", "day"]))
    grid = ParamGrid.from_spec({"symbol": ["AAPL", "MSFT", "NOPE"],
                                "day": {"from": "2026-10-01", "to": "2026-10-31", "step": "1d"}})
    ex.add_plan(SyncPlan("backfill", "daily", grid, parse_schedule("manual")))
    summary = await ex.run()                            # until no plan has work left
    s = summary.plans["backfill"]
    print(f"backfill: {s['done']} done, {s['skipped']} skipped (done before), {s['failed']} failed, "
          f"{s['retries']} retries")

    # The master/worker job API: split into mini-tasks, run them under limits, aggregate.
    total = await ex.submit_job(range(1, 101), square, sum, limits=[Quota(200, 1.0)], name="squares")
    print(f"sum of squares 1..100 = {total}")
    try:
        await ex.submit_job([1, 0, 2], lambda x: 1 / x, sum, name="divide")
    except JobFailed as exc:                            # names each failed mini-task and why
        print(f"job failed as expected: {exc}")
    ex.close()
    print(f"rows are in {folder / 'prices.db'}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"))
