"""Who may call the daemon: the guard's checks as pure functions of a request's method, path and headers."""

from __future__ import annotations

import pytest

from synctask.server.guard import Policy, check, host_name

TOKEN = "t0ken-of-the-owner"
POLICY = Policy(token=TOKEN)
OWNER = {"Host": "127.0.0.1:8737", "Authorization": f"Bearer {TOKEN}"}
JSON = {**OWNER, "Content-Type": "application/json"}


def status(method: str, path: str, headers: dict[str, str], policy: Policy = POLICY) -> int:
    refusal = check(policy, method, path, headers)
    return 200 if refusal is None else refusal.status


@pytest.mark.parametrize("host", ["127.0.0.1:8737", "localhost:8737", "LOCALHOST", "[::1]:8737", "127.0.0.5:1",
                                  "localhost.:8737"])
def test_loopback_names_and_addresses_are_this_daemon(host):
    assert status("GET", "/api/plans", {**OWNER, "Host": host}) == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8737", "127.0.0.1.nip.io:8737",
                                  "10.0.0.5:8737", "", "[::ffff:8.8.8.8]:80", "localhost.attacker.example"])
def test_a_foreign_host_is_refused_before_the_token_is_looked_at(host):
    refusal = check(POLICY, "GET", "/api/plans", {**OWNER, "Host": host})
    assert refusal is not None and refusal.status == 403 and "--allow-host" in refusal.message
    assert status("GET", "/healthz", {"Host": host}) == 403  # even the open paths: a rebound page learns nothing


def test_names_the_owner_allowed_and_any_address_when_bound_to_all():
    allowed = Policy(token=TOKEN, hosts=frozenset({"box.lan"}))
    assert status("GET", "/api/plans", {**OWNER, "Host": "box.lan:8737"}, allowed) == 200
    everywhere = Policy(token=TOKEN, bound="0.0.0.0")
    assert status("GET", "/api/plans", {**OWNER, "Host": "10.0.0.5:8737"}, everywhere) == 200
    assert status("GET", "/api/plans", {**OWNER, "Host": "attacker.example"}, everywhere) == 403
    named = Policy(token=TOKEN, bound="box.lan")
    assert status("GET", "/api/plans", {**OWNER, "Host": "BOX.LAN:8737"}, named) == 200


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1:8737",
                                    "http://localhost:8737"])
def test_a_page_of_another_origin_is_refused_even_with_the_token(origin):
    for method, headers in (("GET", OWNER), ("POST", JSON)):
        refusal = check(POLICY, method, "/api/plans", {**headers, "Origin": origin})
        assert refusal is not None and refusal.status == 403 and "other origins" in refusal.message


@pytest.mark.parametrize("site", ["cross-site", "same-site", "CROSS-SITE"])
def test_fetch_metadata_of_another_site_is_refused(site):
    assert status("POST", "/api/plans/x/pause", {**JSON, "Sec-Fetch-Site": site}) == 403


def test_the_dashboards_own_calls_pass():
    same = {**JSON, "Origin": "http://127.0.0.1:8737", "Sec-Fetch-Site": "same-origin"}
    assert status("POST", "/api/plans/x/pause", same) == 200
    assert status("GET", "/api/events", {**OWNER, "Sec-Fetch-Site": "same-origin"}) == 200
    assert status("GET", "/api/plans", {**OWNER, "Sec-Fetch-Site": "none"}) == 200  # typed in the address bar


def test_every_call_needs_the_token_loopback_included():
    bare = {"Host": "127.0.0.1:8737"}
    for method, path in (("GET", "/api/plans"), ("GET", "/api/events"), ("GET", "/api/vendors"),
                         ("POST", "/api/plans"), ("DELETE", "/api/plans/x"), ("GET", "/metrics")):
        assert status(method, path, {**bare, "Content-Type": "application/json"}) == 401, path
        assert status(method, path, {**bare, "Content-Type": "application/json",
                                     "Authorization": "Bearer wrong"}) == 401, path
        assert status(method, path, {**bare, "Content-Type": "application/json",
                                     "Authorization": TOKEN}) == 401, path  # the scheme is part of it
    for path in ("/healthz", "/", "/static/dashboard.js"):
        assert status("GET", path, bare) == 200, path
    assert status("GET", "/metrics", bare, Policy(token=TOKEN, metrics_public=True)) == 200
    assert status("POST", "/metrics", {**bare, "Content-Type": "application/json"},
                  Policy(token=TOKEN, metrics_public=True)) == 401  # only reading is public


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                  "", "text/html", "application/jsonp"])
def test_a_change_a_browser_can_send_cross_site_without_asking_is_refused(kind):
    headers = {**OWNER, "Content-Type": kind} if kind else OWNER
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        refusal = check(POLICY, method, "/api/plans", headers)
        assert refusal is not None and refusal.status == 415 and "application/json" in refusal.message


@pytest.mark.parametrize("kind", ["application/json", "application/json; charset=utf-8", "application/toml",
                                  "Application/JSON"])
def test_json_and_toml_bodies_are_taken(kind):
    assert status("POST", "/api/plans", {**OWNER, "Content-Type": kind}) == 200


def test_host_name_drops_port_brackets_and_case():
    assert host_name("LocalHost:80") == "localhost"
    assert host_name("[::1]:8737") == "::1"
    assert host_name("[::1]") == "::1"
    assert host_name("::1") == "::1"
    assert host_name("example.com.") == "example.com"
