"""The dashboard in a real headless browser (Debian's chromium driven by Playwright) against a
real `synctask serve`: rows fill in live, pause works from the page while the other plan goes
on, the console stays clean, the token never shows, and screenshots are kept for a person."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from .served import api, daemon, wait_until

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium (apt-get install -y chromium); .ci/run installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[test]')")

TASKS = '''
import asyncio, random
from synctask import InvalidRequest, RateLimited

async def bars(day):
    await asyncio.sleep(0.02)
    return [{"day": day, "close": 100 + day % 7}]

async def reference(code):
    await asyncio.sleep(0.03)
    if code % 9 == 0:
        raise InvalidRequest(f"security {code} is not listed on this exchange")
    if code == 40:
        raise RateLimited("too many requests", retry_after=30)
    return [{"code": code}]
'''

PLANS = '''
[vendors.market]
connector = "python:dash_tasks:bars"
token = { env = "MARKET_TOKEN" }
limits = [{ rate = 60, per = "1s" }, { rate = 100000, per = "1d", window = "clock", tz = "Asia/Shanghai" }]

[vendors.refdata]
connector = "python:dash_tasks:reference"
limits = [{ rate = 20, per = "1s" }, { concurrency = 4 }]

[datasets.daily]
vendor = "market"
api = "python:dash_tasks:bars"
sink = { kind = "sqlite", path = "bars.db", key = ["day"] }

[datasets.minute]
vendor = "market"
api = "python:dash_tasks:bars"
sink = { kind = "sqlite", path = "minute.db", key = ["day"] }

[datasets.symbols]
vendor = "refdata"
api = "python:dash_tasks:reference"
sink = { kind = "sqlite", path = "symbols.db", key = ["code"] }

[[plans]]
name = "daily-bars"
dataset = "daily"
params = { day = { from = 1, to = 20000 } }

[[plans]]
name = "minute-bars"
dataset = "minute"
params = { day = { from = 1, to = 20000 } }

[[plans]]
name = "symbols"
dataset = "symbols"
params = { code = { from = 1, to = 120 } }
'''

MARKET_TOKEN = "mkt-7f3a9c-secret-value"
API_TOKEN = "dashboard-api-t0ken-42"


def test_the_dashboard_is_live_and_its_buttons_control_the_plans(tmp_path):
    (tmp_path / "dash_tasks.py").write_text(TASKS)
    (tmp_path / "plans.toml").write_text(PLANS)
    shots = Path(os.environ.get("SYNCTASK_SCREENSHOTS") or tempfile.mkdtemp(prefix="synctask-dashboard-"))
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with daemon(tmp_path, "--host", "127.0.0.2", MARKET_TOKEN=MARKET_TOKEN, SYNCTASK_API_TOKEN=API_TOKEN) as (_, url), \
            sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            # Open the page once a task has failed: the page must still show it (the stream's history).
            wait_until(lambda: api(url, path="/api/plans/symbols", token=API_TOKEN)[1]["failed"] >= 1)
            page.goto(url + "/")
            # The daemon listens beyond loopback, so the page asks for the token once.
            page.locator("#token-input").fill(API_TOKEN)
            page.locator("#token-form button").click()
            page.wait_for_selector("#conn.live")

            def row(plan: str):
                return page.locator(f'#plans tr[data-plan="{plan}"]')

            def done(plan: str) -> int:
                text = row(plan).locator("td.progress em").inner_text()
                return int(text.split("/")[0].replace(",", "").strip())

            for plan in ("daily-bars", "minute-bars", "symbols"):
                row(plan).wait_for()
            page.wait_for_function("() => document.querySelectorAll('#plans tbody tr').length === 3")
            first = done("daily-bars")
            page.wait_for_function(f"""() => parseInt(document.querySelector('#plans tr[data-plan="daily-bars"] '
                                   + 'td.progress em').textContent.replace(/,/g, '')) > {first}""")

            row("daily-bars").locator('button[data-action="pause"]').click()
            page.wait_for_selector('#plans tr[data-plan="daily-bars"][data-state="paused"]')
            page.wait_for_function("() => document.querySelector('#plans tr[data-plan=\"daily-bars\"]') "
                                   "&& !document.querySelector('#plans tr[data-plan=\"daily-bars\"]')"
                                   ".textContent.includes('running')")
            page.wait_for_timeout(1500)  # in-flight tasks of the paused plan finish, then it holds still
            paused_at, other_at = done("daily-bars"), done("minute-bars")
            page.wait_for_timeout(2500)
            assert done("daily-bars") == paused_at
            assert done("minute-bars") > other_at  # the other plan keeps rising on the page
            assert row("daily-bars").locator('button[data-action="resume"]').count() == 1

            # The vendors' panel says each limit's use in words; a failed task shows its message.
            page.wait_for_selector('#vendors [data-vendor="market"]')
            vendors = page.locator("#vendors").inner_text()
            assert "of 60 in the last 1s" in vendors and "today, resets 00:00 Asia/Shanghai" in vendors
            assert "of 4 in flight" in vendors
            page.wait_for_function("() => document.querySelector('#events').textContent.includes('not listed')")
            row("symbols").locator("td.name button").click()
            page.wait_for_selector("#failures li")
            assert "is not listed on this exchange" in page.locator("#failures").inner_text()
            page.select_option("#event-filter", "symbols")
            assert all(item == "symbols" for item in page.locator("#events li").evaluate_all(
                "items => items.map(i => i.dataset.plan)"))
            page.select_option("#event-filter", "")

            page.screenshot(path=str(shots / "dashboard-1280x720.png"))
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(300)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than a phone
            page.screenshot(path=str(shots / "dashboard-390x844.png"), full_page=True)

            html = page.content()
            storage_free = page.evaluate("document.body.innerText")
            for secret in (API_TOKEN, MARKET_TOKEN):
                assert secret not in html and secret not in storage_free
        finally:
            browser.close()
    print(f"dashboard screenshots: {shots}")
    assert errors == [], errors
