"""Secrets stay secret even when a vendor echoes them back: not on the screen, not in --json
events, not in state.db, whatever the vendor's answer quotes (the body, a header, the URL)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

SECRET = "tok-SECRET-4242"

PLANS = """
[vendors.ts]
connector = "tushare"
base_url = "{url}/tushare"
token = {{ env = "TS_TOKEN" }}

[vendors.api]
connector = "rest"
base_url = "{url}"
token = {{ env = "API_TOKEN" }}

[datasets.daily]
vendor = "ts"
api = "daily"
sink = {{ kind = "sqlite", path = "data.db", key = ["ts_code"] }}

[datasets.items]
vendor = "api"
options = {{ path = "/v1/{{status}}", query = {{ key = "{{token}}" }}, headers = {{ Authorization = "Bearer {{token}}" }}, records = "data" }}
sink = {{ kind = "sqlite", path = "data.db", key = ["id"] }}

[[plans]]
name = "daily"
dataset = "daily"
params = {{ ts_code = ["000001.SZ"] }}

[[plans]]
name = "items"
dataset = "items"
params = {{ status = ["400"] }}
retry = {{ attempts = 2, backoff = "0.05s..0.1s" }}

[[plans]]
name = "refused"
dataset = "items"
params = {{ status = ["401"] }}
"""


class _Echo(BaseHTTPRequestHandler):
    """Every answer quotes what it was sent: Tushare's body, a gateway's headers and URL."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self._send(200, {"code": 40002, "msg": f"invalid credentials for request {body}", "data": None})

    def do_GET(self) -> None:
        status = int(self.path.split("/")[2].split("?")[0])
        echo = f"{self.command} {self.path} Authorization: {self.headers.get('Authorization')}"
        self._send(status, {"error": echo})

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def echo_vendor() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("output", ["--plain", "--json"])
def test_a_vendor_that_echoes_the_token_never_gets_it_shown_or_stored(tmp_path, echo_vendor, output):
    path = tmp_path / "plans.toml"
    path.write_text(PLANS.format(url=echo_vendor))
    env = {**os.environ, "TS_TOKEN": SECRET, "API_TOKEN": SECRET}
    result = subprocess.run([sys.executable, "-m", "synctask.cli", "run", str(path), output],
                            capture_output=True, text=True, env=env, timeout=90)
    shown = result.stdout + result.stderr
    assert result.returncode == 1, shown
    assert "invalid credentials for request" in shown or "invalid credentials for request" in json.dumps(shown)
    assert "***" in shown  # the echo is there, masked
    for form in (SECRET, quote(SECRET, safe="")):
        assert form not in shown
        for stored in (tmp_path / ".synctask").iterdir():
            assert form.encode() not in stored.read_bytes(), stored.name
    db = sqlite3.connect(tmp_path / ".synctask" / "state.db")
    messages = [m for (m,) in db.execute("SELECT message FROM tasks") if m]
    db.close()
    assert messages and all("***" in m for m in messages), messages


def test_the_redactor_masks_every_form_and_leaves_short_words_alone():
    from synctask.redact import Redactor

    redact = Redactor()
    redact.add("abc")
    redact.add("s3cr3t/+value")
    text = 'x=s3cr3t%2F%2Bvalue "s3cr3t/+value" s3cr3t%2F%2Bvalue abcdef abc'
    assert redact(text) == 'x=*** "***" *** abcdef ***'


_ALPHABET = "abcXYZ0129/+=&<>\"' %?#:;\\é€😀\n"


def _encodings():
    """Ways one character may come back from a vendor: each is (applies to c, encode c)."""
    import html as html_lib

    def pct(c, form="%{:02X}"):
        return "".join(form.format(b) for b in c.encode())

    return [
        (lambda c: True, lambda c: c),
        (lambda c: True, lambda c: pct(c)),
        (lambda c: True, lambda c: pct(c, "%{:02x}")),
        (lambda c: True, lambda c: pct(c, "%25{:02X}")),  # encoded twice
        (lambda c: c == " ", lambda c: "+"),
        (lambda c: c == "/", lambda c: "\\/"),
        (lambda c: True, lambda c: json.dumps(c)[1:-1]),
        (lambda c: ord(c) < 0x10000, lambda c: f"\\u{ord(c):04X}"),
        (lambda c: ord(c) >= 0x10000, lambda c: json.dumps(c)[1:-1].upper().replace("\\U", "\\u")),
        (lambda c: True, lambda c: f"&#{ord(c)};"),
        (lambda c: True, lambda c: f"&#x{ord(c):X};"),
        (lambda c: html_lib.escape(c) != c, lambda c: html_lib.escape(c)),
    ]


@given(token=st.text(alphabet=_ALPHABET, min_size=8, max_size=40),
       choices=st.lists(st.integers(min_value=0, max_value=11), min_size=40, max_size=40),
       around=st.sampled_from([("", ""), ("error: ", " was refused"), ("?apikey=", "&x=1"), ('{"t": "', '"}')]))
def test_a_secret_cannot_escape_the_redactor_in_any_mix_of_encodings(token, choices, around):
    from synctask.redact import MASK, Redactor

    redact = Redactor()
    redact.add(token)
    encodings = _encodings()
    written = []
    for c, pick in zip(token, choices):
        usable = [encode for applies, encode in encodings if applies(c)]
        written.append(usable[pick % len(usable)](c))
    echoed = around[0] + "".join(written) + around[1]
    shown = redact(echoed)
    # All of the echoed secret is inside what was masked (the mask may reach into the text around
    # it where that text could be part of the secret too, never less).
    assert MASK in shown, (token, echoed, shown)
    before, after = shown[:shown.index(MASK)], shown[shown.rindex(MASK) + len(MASK):]
    assert around[0].startswith(before) and around[1].endswith(after), (token, echoed, shown)
