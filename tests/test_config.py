"""Plan files: the DESIGN.md example loads; every kind of bad input names its place."""

from __future__ import annotations

from pathlib import Path

import pytest

from synctask import PlanFileError, Quota, load_plan_file, parse_plan_text

EXAMPLE = Path(__file__).parent.parent / "examples" / "tushare.toml"
ENV = {"TUSHARE_TOKEN": "s3cret-token-value"}

BASE = """
[vendors.tushare]
connector = "tushare"
token = { env = "TUSHARE_TOKEN" }
limits = [{ rate = 500, per = "1m" }]

[datasets.daily]
vendor = "tushare"
limits = [{ rate = 200, per = "1m" }]

[[plans]]
name = "p"
dataset = "daily"
params = { code = ["A", "B"] }
"""


def problems(text: str, env=ENV) -> list[str]:
    with pytest.raises(PlanFileError) as info:
        parse_plan_text(text, "plans.toml", env)
    assert str(info.value).startswith("plans.toml: ")
    return [str(p) for p in info.value.problems]


def test_the_design_example_loads_with_its_limits_and_task_count():
    plans = load_plan_file(EXAMPLE, ENV)
    plan = plans.plan("daily-backfill")
    assert len(plan.params.bind()) == 2 * 91
    assert plans.datasets["daily"].limits == (Quota(200, 60.0), Quota(100000, 86400.0, clock=True, tz="Asia/Shanghai"))
    assert plans.vendors["tushare"].limits == (Quota(500, 60.0),)
    assert plan.timeout == 30.0 and plan.priority == 5 and plan.retry.attempts == 5
    assert plans.vendors["tushare"].token.reveal() == "s3cret-token-value"


def test_the_secret_never_shows_in_reprs():
    plans = load_plan_file(EXAMPLE, ENV)
    text = repr(plans) + str(plans.vendors) + f"{plans.vendors['tushare'].token}"
    assert "s3cret" not in text
    assert "***" in text


def test_unknown_key_suggests_the_close_one():
    assert problems(BASE.replace("{ rate = 200,", "{ rat = 200,")) == [
        "datasets.daily.limits[0]: unknown key 'rat' (did you mean 'rate'?)"
    ]


def test_unknown_top_level_and_table_keys_list_what_is_allowed():
    found = problems(BASE + "\n[extra]\nx = 1\n")
    assert found == ["unknown key 'extra'; allowed: vendors, datasets, plans"]
    found = problems(BASE.replace('connector = "tushare"', 'connector = "tushare"\nbase_uri = "x"'))
    assert found == ["vendors.tushare: unknown key 'base_uri' (did you mean 'base_url'?)"]


def test_broken_toml_says_where():
    (message,) = problems(BASE + "\n[[plans]\n")
    assert message.startswith("not valid TOML") and "line" in message


@pytest.mark.parametrize("old, new, expected", [
    ("rate = 200", 'rate = "200"', "datasets.daily.limits[0].rate: expected a whole number, got '200'"),
    ("rate = 200", "rate = 0", "datasets.daily.limits[0].rate: must be at least 1, got 0"),
    ('per = "1m" }]\n\n[[', 'per = "-1m" }]\n\n[[', "datasets.daily.limits[0].per: expected a duration"),
    ('per = "1m" }]\n\n[[', 'per = 0 }]\n\n[[', "datasets.daily.limits[0].per: must be a positive duration"),
    ('name = "p"', "name = 5", "plans[0].name: expected a string, got 5"),
    ('dataset = "daily"', 'dataset = "dayly"', "plans[0] (p).dataset: unknown dataset 'dayly' (did you mean 'daily'?)"),
    ('vendor = "tushare"', 'vendor = "tushar"', "datasets.daily.vendor: unknown vendor 'tushar' (did you mean 'tushare'?)"),
    ('params = { code = ["A", "B"] }', 'params = { code = [] }', "plans[0] (p).params: an empty list"),
    ('params = { code = ["A", "B"] }', 'schedule = "hourly"', "plans[0] (p).schedule: a schedule is"),
    ('limits = [{ rate = 500, per = "1m" }]', 'limits = [{ rate = 500 }]', "vendors.tushare.limits[0]: a quota needs both"),
])
def test_wrong_values_name_the_place_and_what_is_expected(old, new, expected):
    text = BASE.replace(old, new, 1)
    assert text != BASE
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_a_missing_secret_names_the_variable_and_never_a_value():
    (message,) = problems(BASE, env={})
    assert message == (
        "vendors.tushare.token: environment variable TUSHARE_TOKEN is not set; "
        "export it before running (its value is never printed)"
    )


def test_a_literal_secret_in_the_file_is_refused():
    (message,) = problems(BASE.replace('token = { env = "TUSHARE_TOKEN" }', 'token = "abc"'))
    assert "secrets come from the environment" in message and "abc" not in message


def test_a_weight_that_can_never_fit_its_limits_is_refused():
    found = problems(BASE.replace('vendor = "tushare"\n', 'vendor = "tushare"\nweight = 300\n'))
    assert found == [
        "datasets.daily.weight: a request of weight 300 can never fit in the limit 200 per 1m; "
        "lower the weight or raise the limit"
    ]


def test_every_problem_of_the_cross_checks_is_listed_at_once():
    text = BASE.replace('vendor = "tushare"', 'vendor = "nope"').replace('dataset = "daily"', 'dataset = "nope"')
    assert len(problems(text, env={})) == 3


def test_duplicate_plan_names_are_refused():
    text = BASE + '\n[[plans]]\nname = "p"\ndataset = "daily"\n'
    assert problems(text) == ["plans[1] (p).name: plan name 'p' is used twice; names must be unique"]


def test_clock_limits_with_a_time_zone_and_node_limits():
    text = BASE.replace(
        'limits = [{ rate = 500, per = "1m" }]',
        'limits = [{ rate = 500, per = "1m" }, { rate = 50, per = "1s", scope = "node" }, { concurrency = 4 }]',
    ).replace(
        'limits = [{ rate = 200, per = "1m" }]',
        'limits = [{ rate = 200, per = "1m", window = "clock" }, { rate = 9, per = "1d", window = "clock", tz = "Asia/Shanghai" }]',
    )
    plans = parse_plan_text(text, "plans.toml", ENV)
    assert plans.datasets["daily"].limits[1] == Quota(9, 86400.0, clock=True, tz="Asia/Shanghai")
    assert plans.vendors["tushare"].node_limits == (Quota(50, 1.0),)
    bad = text.replace('tz = "Asia/Shanghai"', 'tz = "Asia/Shangai"')
    assert any("datasets.daily.limits[1]" in p and "Asia/Shangai" in p for p in problems(bad))


def test_a_missing_file_is_a_plan_file_error():
    with pytest.raises(PlanFileError, match="no such file"):
        load_plan_file("/nonexistent/plans.toml")


REST = """
[vendors.api]
connector = "{connector}"
base_url = "http://127.0.0.1:9"

[datasets.bars]
vendor = "api"
options = {options}

[[plans]]
name = "p"
dataset = "bars"
params = {params}
"""


@pytest.mark.parametrize("connector, options, params, expected", [
    ("rest", '{ path = "/v1/bars", record = "rows" }', "{ day = [1] }",
     "datasets.bars.options: unknown option 'record' (did you mean 'records'?)"),
    ("rest", '{ path = "/v1/bars", pagination = { kind = "cursr" } }', "{ day = [1] }",
     "datasets.bars.options.pagination.kind:"),
    ("rest", '{ path = "/v1/{sym}/bars" }', "{ day = [1] }",
     "plans[0] (p).params: dataset 'bars' fills {sym} in its request, but this plan has no parameter 'sym'"),
    ("rest", '{ path = "/v1/bars", query = { key = "{token}" } }', "{ day = [1] }",
     "vendors.api.token: dataset 'bars' fills {token} in its request, but the vendor has no token"),
    ("websocket", '{ batch = "every" }', '{ symbols = ["A"] }', "datasets.bars.options.batch:"),
    ("rset", "{}", "{ day = [1] }", "vendors.api.connector: unknown connector 'rset' (did you mean 'rest'?)"),
])
def test_connector_options_and_templates_are_checked_where_they_are_written(connector, options, params, expected):
    found = problems(REST.format(connector=connector, options=options, params=params))
    assert any(expected in p for p in found), found


def test_a_reversed_range_is_a_warning_not_an_error():
    plans = parse_plan_text(BASE.replace('params = { code = ["A", "B"] }',
                                         'params = { day = { from = "2024-02-01", to = "2024-01-01" } }'),
                            "p.toml", ENV)
    assert [str(w) for w in plans.warnings] == [
        "plans[0] (p).params: the grid gives no tasks: is a range's 'to' before its 'from'?"]
