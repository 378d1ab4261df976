"""Plan keys set without editing the file: --set on the command line, SYNCTASK__... in the
environment (dlt's convention), the command line winning; typed values; plans by name; clear
errors naming the override."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synctask import PlanFileError
from synctask.config import load_plan_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_a_key_is_set_from_the_command_line_and_the_environment_with_its_type(monkeypatch):
    monkeypatch.setenv("SYNCTASK__VENDORS__ITEMS_API__BASE_URL", "http://127.0.0.1:9100")
    monkeypatch.setenv("SYNCTASK__PLANS__ITEMS_JANUARY__RETRY__ATTEMPTS", "9")
    plans = load_plan_file(EXAMPLES / "rest.toml", {"ITEMS_API_TOKEN": "t"})
    assert plans.vendors["items-api"].base_url == "http://127.0.0.1:9100"  # items_api found items-api
    assert plans.plan("items-january").retry.attempts == 9
    plans = load_plan_file(EXAMPLES / "rest.toml", {"ITEMS_API_TOKEN": "t"}, sets=[
        "vendors.items-api.base_url=http://127.0.0.1:9200",  # the command line wins
        'plans.items-january.params.day.to="2024-01-05"',
        'vendors.items-api.limits=[{ rate = 5, per = "1s" }]'])
    assert plans.vendors["items-api"].base_url == "http://127.0.0.1:9200"
    assert plans.plan("items-january").retry.attempts == 9
    assert len(plans.plan("items-january").params.bind()) == 5
    assert [str(limit) for limit in plans.vendors["items-api"].limits] == ["5 per 1s"]


@pytest.mark.parametrize(("given", "said"), [
    ("vendors.items-api.base_url", "write --set KEY.PATH=VALUE"),
    ("plans.nope.retry.attempts=3", "no item named 'nope' (known: items-january)"),
    ("vendors.items-api.base_url.host=x", "is a value, not a table"),
    ("plans.items-january.retry.attempts=many", "attempts"),  # the plan's own check names the key
])
def test_a_wrong_override_is_a_sentence_naming_it(given, said, monkeypatch):
    monkeypatch.delenv("SYNCTASK__VENDORS__ITEMS_API__BASE_URL", raising=False)
    with pytest.raises(PlanFileError) as caught:
        load_plan_file(EXAMPLES / "rest.toml", {"ITEMS_API_TOKEN": "t"}, sets=[given])
    assert said in str(caught.value)


def test_check_names_each_override_and_never_its_value():
    env = {"PATH": "/usr/bin:/bin", "SYNCTASK__VENDORS__ITEMS_API__TOKEN": '{ env = "OTHER_TOKEN" }',
           "OTHER_TOKEN": "s3cret-value"}
    said = subprocess.run([sys.executable, "-m", "synctask.cli", "check", str(EXAMPLES / "rest.toml"), "--set",
                           "vendors.items-api.base_url=http://127.0.0.1:9300"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert said.returncode == 0, said.stderr
    assert "override: vendors.items-api.base_url (from --set vendors.items-api.base_url)" in said.stdout
    assert "override: vendors.items_api.token (from SYNCTASK__VENDORS__ITEMS_API__TOKEN)" in said.stdout
    assert "s3cret-value" not in said.stdout + said.stderr
