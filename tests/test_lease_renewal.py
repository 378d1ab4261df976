"""A scope that used its whole lease is renewed at once, and a lease covers the time until the
next renewal: a fast run with a state file is never parked waiting for the periodic save."""

from __future__ import annotations

import asyncio
import time

import synctask.delivery as delivery_module
from synctask import Limiter, Quota
from synctask.catalog import Catalog
from synctask.delivery import Delivery


def test_a_scope_that_used_its_whole_lease_gets_a_new_one_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(delivery_module, "SAVE_EVERY", 30.0)  # no periodic save during the test
    monkeypatch.setattr(delivery_module, "LEASE", 120.0)
    monkeypatch.setattr(delivery_module, "RENEWED_WITHIN", 90.0)
    limiter = Limiter()
    limiter.configure("vendor:v", [Quota(1_000_000, 1.0)])
    delivery = Delivery(Catalog(tmp_path), limiter, time.time, None, tmp_path / "state.db")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        delivery.loop = loop
        await delivery.prepare([])  # the first lease: the floor
        gate = limiter.gate(["vendor:v"])
        saver = asyncio.create_task(delivery.save_usage_periodically(30.0))
        await asyncio.sleep(0)
        admitted = 0
        while gate.try_acquire(1, time.time()) is None:
            admitted += 1
        assert admitted == 10 and limiter.lease_starved  # parked on its allowance
        delivery.renew_soon()
        deadline = loop.time() + 10.0
        while limiter.lease_starved and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert not limiter.lease_starved, "the lease was not renewed early"
        # Twice what it admitted, stretched to the time until the next renewal: far more than 20.
        more = 0
        while more < 1000 and gate.try_acquire(1, time.time()) is None:
            more += 1
        assert more == 1000
        saver.cancel()
        await asyncio.gather(saver, return_exceptions=True)

    asyncio.run(main())
    delivery.close()


def test_an_allowance_is_stretched_to_the_time_its_lease_may_have_to_last():
    limiter = Limiter()
    limiter.configure("vendor:v", [Quota(1000, 1.0)])
    limiter.lease(10.0, {"vendor:v": 100})
    gate = limiter.gate(["vendor:v"])
    for _ in range(40):
        assert gate.send(1, 1.0) is None
    assert limiter.next_allowances(3.0) == {"vendor:v": 80}  # twice what it used
    assert limiter.next_allowances(3.0, stretch=3.0) == {"vendor:v": 240}  # over three times the time
    assert limiter.next_allowances(3.0, stretch=100.0) == {"vendor:v": 4000}  # never past its windows
