"""The simulator itself: every profile under one server, the sliding REST limit and its ban."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from synctask.simulator import Simulator, SimulatorConfig


def test_profile_all_serves_each_vendor_under_its_own_path_with_its_own_counts():
    async def go():
        async with Simulator(SimulatorConfig("all")) as sim, aiohttp.ClientSession() as http:
            body = {"api_name": "daily", "token": "demo-token", "params": {"ts_code": "000001.SZ",
                                                                          "trade_date": "20240102"}}
            async with http.post(f"{sim.url}/tushare", json=body) as answer:
                tushare = await answer.json()
            async with http.get(f"{sim.url}/binance/api/v3/klines",
                                params={"symbol": "BTCUSDT", "interval": "1h", "limit": "3"}) as answer:
                klines = await answer.json()
            async with http.get(f"{sim.url}/rest/v1/items", params={"day": "2024-01-01"}) as answer:
                items = await answer.json()
                link = answer.headers["Link"]
            async with http.ws_connect(f"{sim.url}/ws/ws") as ws:
                await ws.send_json({"symbols": ["BTCUSDT"]})
                quote = await ws.receive_json()
            async with http.get(f"{sim.url}/_admin/stats") as answer:
                stats = await answer.json()
            return tushare, klines, items, link, quote, stats

    tushare, klines, items, link, quote, stats = asyncio.run(go())
    assert tushare["code"] == 0 and tushare["data"]["items"][0][0] == "000001.SZ"
    assert len(klines) == 3
    assert len(items["data"]["items"]) == 10 and link.startswith("</rest/v1/items?")  # the next page keeps the prefix
    assert quote["seq"] == 0
    assert set(stats) == {"tushare", "binance", "rest", "ws", "hidden"} and stats["binance"]["served"] == 1


def test_rest_sliding_limit_answers_429_then_bans_a_client_that_ignores_it_and_reset_forgets():
    config = SimulatorConfig("rest", scale=60, rest_per_minute=5, rest_sliding=True, rest_rate_headers=False,
                             rest_ban_after=3, binance_ban_seconds=600)

    async def go():
        async with Simulator(config) as sim, aiohttp.ClientSession() as http:
            async def status() -> tuple[int, dict[str, str]]:
                async with http.get(f"{sim.url}/v1/items", params={"day": "d"}) as answer:
                    await answer.read()
                    return answer.status, dict(answer.headers)

            answers = [await status() for _ in range(10)]
            bans = sim.stats.bans
            sim.reset()
            after_reset = await status()
            return answers, bans, after_reset

    answers, bans, after_reset = asyncio.run(go())
    statuses = [s for s, _ in answers]
    assert statuses[:5] == [200] * 5 and statuses[5] == 429  # the 6th inside one sliding second
    assert "RateLimit" not in answers[0][1] and answers[5][1]["Retry-After"] == "1"
    assert statuses[6:9] == [429] * 3 and statuses[9] == 403  # kept sending while told to wait: banned
    assert bans == 1 and after_reset[0] == 200


def test_a_late_stamping_vendor_counts_each_request_after_reading_it():
    import time

    from synctask.simulator import Faults

    faults = Faults.parse("latency=1ms..2ms,stamp=30ms..40ms,drop=0.01")
    assert (faults.stamp_min, faults.stamp_max, faults.drop_rate) == (0.03, 0.04, 0.01)

    async def go():
        async with Simulator(SimulatorConfig("rest", scale=60, rest_sliding=True, faults=faults)) as sim:
            async with aiohttp.ClientSession() as session:
                sent = time.time()
                async with session.get(f"{sim.url}/v1/items", params={"day": "2024-01-01"}) as answer:
                    assert answer.status == 200
                    answered = time.time()
            return sent, answered, sim._minute_log["items"][0]

    sent, answered, stamped = asyncio.run(go())
    assert sent + 0.03 <= stamped <= answered  # counted late, but before the answer left


def test_the_hidden_profile_counts_per_key_and_a_revoked_key_is_answered_401():
    """``--per-key``: each API key has the whole hidden limit (5 per second here); a key revoked
    mid-run gets 401 while the other goes on."""
    async def go():
        config = SimulatorConfig(profile="hidden", hidden_limits=((5, 1.0, False),), hidden_per_key=True)
        async with Simulator(config) as sim, aiohttp.ClientSession() as http:
            async def get(key: str) -> int:
                async with http.get(f"{sim.url}/v1/hidden", params={"i": "1"},
                                    headers={"Authorization": f"Bearer {key}"}) as answer:
                    return answer.status

            first = [await get("key-a") for _ in range(5)] + [await get("key-b") for _ in range(5)]
            over = await get("key-a")
            async with http.post(f"{sim.url}/_admin/revoke", params={"key": "key-b"}) as answer:
                assert answer.status == 200
            revoked = await get("key-b")
            return first, over, revoked, sim.stats.as_dict()

    first, over, revoked, stats = asyncio.run(go())
    assert first == [200] * 10 and over == 429 and revoked == 401
    assert stats["by_key"] == {"key-a": 5, "key-b": 5}
    assert [(v["kind"], v["key"]) for v in stats["violations"]] == [("over_hidden_limit", "key-a")]


def test_limit_overrides_set_each_profiles_limit_at_the_same_pace_over_its_own_window():
    from synctask.simulator.overrides import limit_overrides

    assert limit_overrides(["rest=1000/1s", "tushare=500/1m", "tushare-daily=10/1h", "binance=100/1s",
                            "hidden=100/10s", "hidden=5/1s"]) == {
        "rest_per_minute": 60_000, "tushare_per_minute": 500, "tushare_per_day": 240,
        "binance_weight_per_minute": 6_000, "hidden_limits": ((100, 10.0, False), (5, 1.0, False))}
    for wrong, said in [("fast=1/1s", "NAME one of tushare"), ("rest=abc", "like rest=1000/1s"),
                        ("rest", "NAME=RATE/PER"), ("rest=0/1s", "like rest=1000/1s")]:
        with pytest.raises(ValueError, match=said):
            limit_overrides([wrong])


def test_simulate_takes_limit_overrides_and_drops_rate_headers_on_request():
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "synctask.cli", "simulate", "--profile", "rest", "--port", "0",
                             "--limit", "rest=1000000/1s", "--no-rate-headers", "--items-per-day", "500"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "rest_per_minute 60,000,000" in line, line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(urllib.request.Request(f"{url}/v1/items?day=2024-01-02&page=50&page_size=10",
                                                           headers={"Authorization": "Bearer demo-token"})) as answer:
            assert answer.status == 200 and "RateLimit" not in answer.headers
            assert len(json.loads(answer.read())["data"]["items"]) == 10  # page 50 of 500 items a day
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
