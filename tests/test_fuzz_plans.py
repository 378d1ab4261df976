"""No traceback, ever, for a bad plan file: the example plan files, the demo's and the tests'
plans, mutated (a key deleted or renamed, a value replaced by one of another type, one
value moved to another key, extreme numbers, bad durations, cron expressions and time zones,
unicode, nesting hundreds deep, broken TOML), give `check` exit 0 or exit 2 with a message
naming the file and the place; a plan that `check` accepts is accepted by what `run` builds;
and the same documents as JSON, as the daemon's API takes them, are a PlanFileError or valid."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from synctask import PlanFileError, SyncError, SyncTaskExecutor, load_plan_file
from synctask.cli import app
from synctask.config import parse_plan_data, read_toml
from synctask.server.catalog import read_document

from .served import PLANS

ROOT = Path(__file__).parent.parent
EXAMPLES = [*sorted((ROOT / "examples").glob("*.toml")), ROOT / "src" / "synctask" / "demo_plans.toml"]
README_PLAN = re.search(r"## The plan file\n\n```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
MORE = {"served.toml": PLANS, "readme.toml": README_PLAN.group(1) if README_PLAN else ""}  # more plans to mutate
ENV = {"TUSHARE_TOKEN": "t0k-fuzz", "ITEMS_API_TOKEN": "t0k-fuzz"}

VALUES = [
    "0", "-1", "1", "3.5", "-0.0", "1e308", "inf", "-inf", "nan", "9223372036854775807", "-9223372036854775808",
    "18446744073709551617", "true", '""', '"x"', "[]", "{}", "[1, 2]", '{ a = 1 }', '"0s"', '"-5s"', '"1.5"',
    '"99999999w"', '"999999999999999999999d"', '"1ms..0s"', '"every 0s"', '"every 99999999w"', '"cron 0 0 30 2 *"',
    '"cron * * * *"', '"cron 0 18 * * 1-5 Mars/Phobos"', '"at 2026-02-30T09:00"', '"at 9999-12-31T23:59"',
    '"manual extra"', '"2024-13-45"', '"2024-01-01T25:00"', "20240131", '"{today-99999999d}"', '"{nope}"',
    '"\u202e\u0000\U0001f600"', '"🙂"', '"%Y%m%d%Q"', '"rset"', '"python:no.such:thing"', '"clock"',
    '{ from = 1, to = 0 }', '{ from = "2024-01-01", to = 20240131 }', '{ from = 0, to = 99999999999999999 }',
    '{ rate = 0, per = "1s" }', '{ concurrency = -1 }', '{ kind = "parquet" }', '{ kind = "nope", key = ["a"] }',
    '"0.0000001s"', '"100ns"', '"{tomorrow:%Q}"', '{ kind = "sqlite", key = ["a"], tabel = "t" }',
    '{ kind = "jsonl", key = ["a"], path = [] }', '{ kind = "jsonl", key = [1] }', '[{ a = 1 }, 2]',
    "[" * 40 + "]" * 40, "[" * 1000 + "]" * 1000, "{ a = " * 40 + "1" + " }" * 40, '{ env = "NOPE" }',
]
KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*)(\s*=\s*)(.*)$")


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    sources = [(path.name, path.read_text()) for path in EXAMPLES] + list(MORE.items())
    name, text = draw(st.sampled_from(sources))
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["value", "value", "delete", "rename", "truncate", "unicode", "duplicate",
                                       "nest", "swap"]))
        match = KEY_LINE.match(lines[i])
        if action == "value" and match:
            lines[i] = match.group(1) + match.group(2) + match.group(3) + draw(st.sampled_from(VALUES))
        elif action == "nest" and match:  # the value, nested a few or hundreds of arrays deep
            depth = draw(st.sampled_from([2, 31, 33, 200, 1500]))
            lines[i] = match.group(1) + match.group(2) + match.group(3) + "[" * depth + match.group(4) + "]" * depth
        elif action == "swap" and match:  # another key's value here: a type swap the file itself offers
            others = [m.group(4) for m in map(KEY_LINE.match, lines) if m]
            lines[i] = match.group(1) + match.group(2) + match.group(3) + draw(st.sampled_from(others))
        elif action == "delete":
            del lines[i]
        elif action == "rename" and match:
            lines[i] = match.group(1) + match.group(2)[::-1] + match.group(3) + match.group(4)
        elif action == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif action == "unicode":
            lines[i] += draw(st.text(min_size=1, max_size=5))
        elif action == "duplicate":
            lines.insert(i, lines[i])
        if not lines:
            lines = [""]
    return name, "\n".join(lines) + "\n"


runner = CliRunner()


@given(case=mutated())
def test_a_mutated_plan_file_gets_exit_0_or_2_with_the_place_named_never_a_traceback(tmp_path_factory, case):
    name, text = case
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = runner.invoke(app, ["check", str(path)], env=ENV)
    shown = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n--- {name}\n{text}")
    assert result.exit_code in (0, 2), shown
    assert "Traceback" not in shown
    if result.exit_code == 2:
        assert f"{path}:" in shown, shown  # every message names the file, then the place in it
        return
    # What check accepted, run accepts too: the engine builds and starts every plan.
    if name == "served.toml":
        return  # its python: tasks live in the serve tests' folders
    plans = load_plan_file(path, ENV)
    executor = SyncTaskExecutor(base_dir=folder)
    try:
        executor.load(plans, start=False)
        for plan in plans.plans:
            due = plan.schedule.next_due(datetime.now(UTC))
            len(plan.params.bind(due))
    except (SyncError, ValueError) as exc:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"check said OK, run would refuse: {exc}\n--- {name}\n{text}")


@given(case=mutated())
def test_the_same_documents_as_json_are_a_plan_file_error_or_valid(case):
    """What the daemon's API does with a body: read it, then validate it; nothing else escapes."""
    import json

    name, text = case
    try:
        doc = read_toml(text, name)
    except PlanFileError:
        return
    body = json.dumps(doc, default=str)
    for kind in ("application/json", "application/toml"):
        try:
            parse_plan_data(read_document(body if "json" in kind else text, "request body", kind),
                            "request body", ENV, secrets_required=False)
        except PlanFileError:
            pass
    deep = "[" * 5000 + "]" * 5000  # past the JSON decoder's own recursion
    with pytest.raises(PlanFileError, match="nested deeper than 32 levels"):
        read_document('{"plans": ' + deep + "}", "request body", "application/json")


def test_the_repros_each_name_their_place(tmp_path):
    example = (Path(__file__).parent.parent / "examples" / "tushare.toml").read_text()
    cases = {
        'to = "2024-03-31"': ("to = 20240131", "params: a range's from and to must both be dates"),
        'schedule = "manual"': ('schedule = "cron 0 0 30 2 *"', "schedule: '0 0 30 2 *' never fires"),
        'timeout = "30s"': ("timeout = inf", "timeout: a duration must be finite"),
    }
    for old, (new, expected) in cases.items():
        path = tmp_path / "plans.toml"
        path.write_text(example.replace(old, new))
        result = runner.invoke(app, ["check", str(path)], env=ENV)
        assert result.exit_code == 2 and expected in result.output, result.output
    path.write_text(example.replace('schedule = "manual"', 'schedule = "every 99999999w"'))
    result = runner.invoke(app, ["check", str(path)], env=ENV)
    assert result.exit_code == 2 and "schedule: a duration must be finite and at most 100 years" in result.output
    huge = example.replace('ts_code = ["000001.SZ", "600000.SH"]',
                           "ts_code = { from = 0, to = 9223372036854775806 }, x = { from = 0, to = 9 }")
    with pytest.raises(PlanFileError, match=r"params: the grid gives [\d,]+ tasks, more than synctask can count"):
        load_plan_file_text(huge, tmp_path)


def load_plan_file_text(text: str, folder: Path) -> None:
    path = folder / "huge.toml"
    path.write_text(text)
    load_plan_file(path, ENV)
