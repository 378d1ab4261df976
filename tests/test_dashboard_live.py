"""The dashboard as a person keeps it open all day, in Debian's chromium driven by Playwright:
focus, a text selection and a held click survive live updates; reconnects never repeat an
event; a restarted daemon's runs and failed tasks are there, searchable; the graphs draw; a
wrong token is said and Escape leaves a way back; cancel asks first; the colours pass WCAG AA."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from .served import TOKENS, api, daemon, wait_until
from .test_dashboard import API_TOKEN, CHROMIUM, MARKET_TOKEN, PLANS, TASKS

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[test]')")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "dash_tasks.py").write_text(TASKS)
    (tmp_path / "plans.toml").write_text(PLANS)
    return tmp_path


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def opened(browser, url: str, errors: list[str], **viewport: int):
    page = browser.new_page(viewport=viewport or {"width": 1280, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/#token={TOKENS[url]}")
    page.wait_for_selector("#conn.live")
    page.wait_for_selector('#plans tr[data-plan="symbols"]')
    return page


def test_focus_a_selection_and_a_held_click_survive_live_updates(workdir, browser):
    errors: list[str] = []
    with daemon(workdir, MARKET_TOKEN=MARKET_TOKEN) as (_, url):
        page = opened(browser, url, errors)
        page.wait_for_selector("#events li .msg")
        focused = page.locator('#plans tr[data-plan="minute-bars"] button[data-action="pause"]')
        focused.focus()
        chosen = page.evaluate("""() => {
            const msg = [...document.querySelectorAll('#events li .msg')].find(m => m.textContent.length > 10);
            const range = document.createRange();
            range.setStart(msg.firstChild, 0);
            range.setEnd(msg.firstChild, 10);
            getSelection().removeAllRanges();
            getSelection().addRange(range);
            return getSelection().toString();
        }""")
        first = int(page.locator('#plans tr[data-plan="minute-bars"] td.progress em').inner_text().split("/")[0]
                    .replace(",", ""))
        page.wait_for_timeout(5000)  # ten snapshots and more redraw the page meanwhile
        later = int(page.locator('#plans tr[data-plan="minute-bars"] td.progress em').inner_text().split("/")[0]
                    .replace(",", ""))
        assert later > first  # it did update
        assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "pause minute-bars"
        assert page.evaluate("getSelection().toString()") == chosen and len(chosen) == 10
        for action, state in (("pause", "paused"), ("resume", "running"), ("pause", "paused")):
            button = page.locator(f'#plans tr[data-plan="daily-bars"] button[data-action="{action}"]')
            box = button.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.wait_for_timeout(400)  # a click held as a person holds it, across redraws
            page.mouse.up()
            wait_until(lambda want=state: api(url, path="/api/plans/daily-bars")[1]["state"] == want, timeout=10)
            page.wait_for_selector(f'#plans tr[data-plan="daily-bars"][data-state="{state}"]')
    assert errors == [], errors


def test_reconnects_never_repeat_an_event_cancel_asks_first_and_an_outage_dims_the_page(workdir, browser):
    errors: list[str] = []
    with daemon(workdir, MARKET_TOKEN=MARKET_TOKEN) as (proc, url):
        page = opened(browser, url, errors)
        page.wait_for_function("() => document.querySelectorAll('#events li').length >= 3")
        for _ in range(2):  # the stream drops (a laptop's sleep, a proxy) and the page comes back
            page.evaluate("() => { streamAbort.abort(); follow(); }")
            page.wait_for_selector("#conn.live")
            api(url, "POST", "/api/plans/daily-bars/pause")
            api(url, "POST", "/api/plans/daily-bars/resume")
        page.wait_for_timeout(1000)
        lines = page.locator("#events li").evaluate_all("items => items.map(i => i.dataset.line)")
        texts = page.locator("#events li").evaluate_all("items => items.map(i => i.textContent)")
        assert len(lines) == len(set(lines)), lines
        assert sum("daily-bars paused" in t for t in texts) == 2, texts  # two pauses: two lines, not four or six
        page.on("dialog", lambda dialog: dialog.dismiss())  # "Cancel plan symbols?" - no
        page.locator('#plans tr[data-plan="symbols"] button[data-action="cancel"]').click()
        page.wait_for_timeout(500)
        assert api(url, path="/api/plans/symbols")[1]["state"] in ("running", "completed")
        assert errors == [], errors
        proc.send_signal(signal.SIGTERM)  # the daemon goes away: the page says so, dims what it shows
        proc.wait(timeout=30)
        page.wait_for_selector("#offline:not([hidden])")
        assert "unreachable" in page.locator("#offline").inner_text() or "ended" in page.locator("#offline").inner_text()
        assert "as of" in page.locator("#offline").inner_text()
        assert "stale" in page.locator("#main").get_attribute("class")
        assert page.locator('#plans tr[data-plan="symbols"]').count() == 1  # the data stays, dimmed
        errors[:] = [e for e in errors if "Failed to load resource" not in e]  # the browser's own network log
    assert errors == [], errors


def test_a_restarted_daemons_runs_and_failed_tasks_are_found_and_the_graphs_draw(workdir, browser):
    errors: list[str] = []
    (workdir / "dash_tasks.py").write_text(TASKS.replace("code == 40", "code == 400"))  # no 30 s freeze here
    with daemon(workdir, MARKET_TOKEN=MARKET_TOKEN) as (_, url):
        wait_until(lambda: api(url, path="/api/plans/symbols")[1]["state"] == "completed", timeout=60)
    with daemon(workdir, MARKET_TOKEN=MARKET_TOKEN) as (_, url):
        page = opened(browser, url, errors)
        page.locator('#plans tr[data-plan="symbols"] td.name button').click()
        page.wait_for_selector("#runs tbody tr")
        assert "completed" in page.locator("#runs tbody").inner_text()
        page.wait_for_selector("#failures li")
        failed = page.locator("#failures li strong").all_inner_texts()
        assert len(failed) == 13 and "code=9" in failed  # codes 9, 18, ... 117
        page.locator("#task-text").fill("code=27")  # as the page shows parameters
        page.wait_for_function("() => document.querySelectorAll('#failures li').length === 1")
        assert page.locator("#failures li strong").inner_text() == "code=27"
        assert "is not listed on this exchange" in page.locator("#failures li").inner_text()
        page.locator('#failures li button[aria-label="retry code=27"]').click()  # that task alone, again
        wait_until(lambda: len(api(url, path="/api/plans/symbols/runs")[1]["runs"]) == 2)
        wait_until(lambda: api(url, path="/api/plans/symbols")[1]["total"] == 1)
        page.wait_for_selector("#graphs svg polyline", timeout=15000)
        assert page.locator("#graphs figure").count() == 4
        heights = page.locator("#graphs figure").first.locator("polyline").get_attribute("points")
        assert any(float(p.split(",")[1]) < 60 for p in heights.split())  # answers were drawn, not a flat line
        assert "Answers per second" in page.locator("#graphs").inner_text()
    assert errors == [], errors


def test_a_wrong_token_is_said_and_escape_leaves_a_way_back(workdir, browser):
    errors: list[str] = []
    with daemon(workdir, MARKET_TOKEN=MARKET_TOKEN, SYNCTASK_API_TOKEN=API_TOKEN) as (_, url):
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector("#token-dialog[open]")
        assert "Not connected yet" in page.locator("#no-plans").inner_text()  # not "No plans yet"
        page.locator("#token-input").fill("not-the-token")
        page.locator("#token-form button").click()
        page.wait_for_selector("#token-dialog[open] #token-error:not([hidden])")
        assert "refused" in page.locator("#token-error").inner_text()
        page.keyboard.press("Escape")
        page.wait_for_selector("#token-dialog:not([open])", state="hidden")
        assert page.locator("#offline").is_visible() and "token" in page.locator("#offline").inner_text()
        page.locator("#offline-token").click()
        page.wait_for_selector("#token-dialog[open]")
        page.locator("#token-input").fill(API_TOKEN)
        page.locator("#token-form button").click()
        page.wait_for_selector("#conn.live")
        page.wait_for_selector('#plans tr[data-plan="symbols"]')
        assert not page.locator("#offline").is_visible()
        assert page.locator("#plans button[data-action='pause']").first.get_attribute("aria-label").startswith("pause ")
    assert errors == [], errors


CONTRAST = """() => {
  const lum = (rgb) => {
    const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const parse = (c) => c.match(/[\\d.]+/g).map(Number);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = (node) => {
    for (let n = node; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c.length < 4 || c[3] > 0.5) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const node of document.querySelectorAll('body *')) {
    if (!node.offsetParent && node.tagName !== 'BODY') continue;
    const own = [...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim());
    const style = getComputedStyle(node);
    if (own) {
      const r = ratio(parse(style.color).slice(0, 3), background(node));
      if (r < 4.5) bad.push(`text ${node.tagName}.${node.className} "${node.textContent.trim().slice(0, 20)}" ${r.toFixed(2)}`);
    }
    if (['BUTTON', 'SELECT', 'INPUT'].includes(node.tagName) && style.borderStyle !== 'none' && parseFloat(style.borderWidth) > 0) {
      const r = ratio(parse(style.borderColor).slice(0, 3), background(node.parentElement));
      if (r < 3) bad.push(`border ${node.tagName} ${r.toFixed(2)}`);
    }
  }
  return bad;
}"""


def test_text_contrast_borders_and_touch_targets_pass_wcag_aa(workdir, browser):
    errors: list[str] = []
    with daemon(workdir, MARKET_TOKEN=MARKET_TOKEN) as (_, url):
        page = opened(browser, url, errors)
        api(url, "POST", "/api/plans/daily-bars/pause")
        page.wait_for_selector('#plans tr[data-plan="daily-bars"][data-state="paused"]')
        page.wait_for_selector("#events li.freeze, #events li.failed")
        page.locator('#plans tr[data-plan="symbols"] td.name button').click()
        page.wait_for_selector("#failures li")
        assert page.evaluate(CONTRAST) == []
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        small = page.locator("button:visible, select:visible, input:visible").evaluate_all(
            "nodes => nodes.map(n => n.getBoundingClientRect()).filter(r => r.height < 44 || r.width < 44).length")
        assert small == 0
        assert page.evaluate(CONTRAST) == []
    assert errors == [], errors
