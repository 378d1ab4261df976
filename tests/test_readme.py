"""The README's examples keep working."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from synctask import parse_plan_text

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_the_plan_file_in_the_readme_is_valid():
    toml = re.search(r"## The plan file\n\n```toml\n(.*?)```", README, re.S).group(1)
    plans = parse_plan_text(toml, "README.md", {"TUSHARE_TOKEN": "x"})
    assert [p.name for p in plans.plans] == ["daily-backfill"]


def test_the_python_api_example_runs(tmp_path):
    code = re.search(r"## Python API\n\n```python\n(.*?)```", README, re.S).group(1)
    (tmp_path / "example.py").write_text(code)
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "'done': 31" in result.stdout and "'state': 'completed'" in result.stdout


def test_the_first_lines_are_the_two_commands():
    first = README.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert first[0].endswith("synctask demo")
    assert first[1].endswith("python -m pytest -q")
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert first[1] in ci


def test_the_pictures_the_readme_shows_are_in_the_repository():
    root = Path(__file__).parent.parent
    for path in re.findall(r"\]\((docs/[^)]+\.png)\)", README):
        assert (root / path).is_file(), path


def test_the_rolling_range_and_cursor_sync_examples_are_valid_plans():
    blocks = re.findall(r"```toml\n(.*?)```", README, re.S)
    rolling = next(b for b in blocks if "daily-bars" in b)
    cursor = next(b for b in blocks if "records-api" in b)
    plans = parse_plan_text('[vendors.tushare]\nconnector = "python:x:f"\n[datasets.daily]\nvendor = "tushare"\n'
                            + rolling, "README.md")
    assert plans.plans[0].rolling and plans.plans[0].refresh == 3 * 86400
    plans = parse_plan_text('[vendors.records-api]\nconnector = "rest"\nbase_url = "http://x"\n' + cursor, "README.md")
    assert plans.datasets["records"].options["incremental"]["param"] == "updated_since"
