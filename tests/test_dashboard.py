"""The dashboard in a real headless browser (Debian's chromium driven by Playwright) against a
real `synctask serve`: rows fill in live, pause works from the page while the other plan goes
on, the console stays clean, the token never shows, and screenshots are kept for a person."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from .served import RCE, TOKENS, api, daemon, wait_until

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
                "items => items.filter(i => !i.hidden).map(i => i.dataset.plan)"))  # others hidden, not redrawn
            page.select_option("#event-filter", "")

            page.wait_for_selector("#graphs svg polyline")  # the last hour drawn, for the picture
            page.screenshot(path=str(shots / "dashboard-1280x720.png"), full_page=True)
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


ATTACK_PAGE = '''<!doctype html><meta charset="utf-8"><title>a page on another site</title>
<script>
const PLAN = `__PLAN__`;
async function attack(target) {
  const said = [];
  const tries = [
    () => fetch(target + "/api/plans", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                                         body: PLAN}),
    () => fetch(target + "/api/plans/daily-bars/pause", {method: "POST", mode: "no-cors"}),
    () => fetch(target + "/api/plans", {method: "POST", headers: {"Content-Type": "application/toml"}, body: PLAN}),
    () => fetch(target + "/api/plans").then(r => r.text()),
  ];
  for (const attempt of tries) {
    try { said.push("sent:" + String(await attempt()).slice(0, 40)); } catch (e) { said.push("blocked:" + e.name); }
  }
  const form = document.createElement("form");  // and the oldest way: a form, in a hidden frame
  form.method = "POST"; form.enctype = "text/plain"; form.action = target + "/api/plans"; form.target = "sink";
  const field = document.createElement("input");
  field.name = PLAN; field.value = ""; form.append(field); document.body.append(form); form.submit();
  return said;
}
</script><iframe name="sink"></iframe>'''.replace("__PLAN__", RCE.strip())


def test_a_page_of_another_origin_cannot_act_through_the_browser(tmp_path):
    """The issue's CSRF: a page on another origin posts a plan that runs code, pauses a plan and
    reads the API, by every way a browser offers. A recording server on a third origin shows
    the browser does send such requests; the daemon acts on none of them."""
    import http.server
    import threading

    (tmp_path / "dash_tasks.py").write_text(TASKS)
    (tmp_path / "plans.toml").write_text(PLANS)
    heard: list[bytes] = []

    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(ATTACK_PAGE.encode())

        def do_POST(self):  # noqa: N802
            heard.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        with daemon(tmp_path, MARKET_TOKEN=MARKET_TOKEN) as (_, url), sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            try:
                context = browser.new_context()
                owner = context.new_page()  # the owner has the dashboard open in the same browser
                owner.goto(f"{url}/#token={TOKENS[url]}")
                owner.wait_for_selector("#conn.live")
                assert "token" not in owner.url  # taken out of the address bar at once
                evil = context.new_page()
                evil.goto(f"http://localhost:{site.server_address[1]}/")
                recorder = f"http://127.0.0.1:{site.server_address[1]}"
                evil.evaluate("target => attack(target)", recorder)  # the control: a server that takes anything
                said = evil.evaluate("target => attack(target)", url)
                evil.wait_for_timeout(1000)
                assert any(b"python:os:system" in body for body in heard), heard  # the browser did send them
                assert said[2].startswith("blocked") and said[3].startswith("blocked"), said  # no answer to read
                views = api(url)[1]["plans"]
                assert {p["name"] for p in views} == {"daily-bars", "minute-bars", "symbols"}
                assert {p["name"]: p["state"] for p in views}["daily-bars"] == "running"
                assert not (tmp_path / "pwned.txt").exists() and not (tmp_path / "data" / "cmd.jsonl").exists()
                answer = owner.evaluate("api('POST', '/api/plans/daily-bars/pause')")  # the page's own call can
                assert answer["state"] == "paused", answer
            finally:
                browser.close()
    finally:
        site.shutdown()
        site.server_close()
