"""``synctask demo``: four simulated vendors, the plan file that syncs them, and the report after.

The vendors run in-process (``demo_profiles``) with the limits the plan file states; none of them
should ever count a request over its limit, and the report says so per vendor. A freeze still
happens: the REST API's RateLimit header says when nothing is left. Everything is deterministic
but the timing.
"""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from .simulator import Faults, SimulatorConfig

if TYPE_CHECKING:
    from rich.console import Console

    from .executor import RunSummary, SyncTaskExecutor
    from .simulator import Simulator

__all__ = ["PLAN_FILE", "DATA_DIR", "DATASETS", "QUERY", "demo_profiles", "write_plan_file", "query_command",
           "report"]

PLAN_FILE = "synctask-demo.toml"
DATA_DIR = "synctask-demo"
DATASETS: Mapping[str, str] = {  # dataset → what it holds
    "daily": "Tushare daily bars",
    "klines": "Binance 1h klines",
    "items": "REST items, every page",
    "quotes": "WebSocket quotes",
}
QUERY = (f"SELECT ts_code, COUNT(*) AS days, ROUND(AVG(close), 2) AS avg_close "
         f"FROM '{DATA_DIR}/daily/**/*.parquet' GROUP BY ts_code ORDER BY ts_code")


def demo_profiles() -> dict[str, SimulatorConfig]:
    """The demo's vendors: 60x fast clocks, 3% 503s and some latency on the HTTP ones."""
    faults = Faults(latency_min=0.005, latency_max=0.040, error_rate=0.03)
    return {
        "tushare": SimulatorConfig("tushare", scale=60, faults=faults, tushare_per_minute=25),
        "binance": SimulatorConfig("binance", scale=60, faults=faults, binance_weight_per_minute=50,
                                   binance_ban_seconds=60),
        "rest": SimulatorConfig("rest", scale=60, faults=faults, rest_per_minute=15, rest_items_per_day=35),
        "ws": SimulatorConfig("ws", ws_per_second=50, ws_drop_every=500),
    }


def write_plan_file(directory: Path, url: str, port: int) -> Path:
    """Write the demo's plan file, pointing at the simulator on ``url``, into ``directory``."""
    template = files("synctask").joinpath("demo_plans.toml").read_text(encoding="utf-8")
    path = directory / PLAN_FILE
    path.write_text(Template(template).substitute(url=url, port=port, query=query_command("python")), encoding="utf-8")
    return path


def _vendor_named(executor: SyncTaskExecutor, profile: str) -> str:
    """The plan's vendor served by the simulator's ``profile`` (its base URL ends in ``/profile``),
    named as the progress lines name it: ``vendor:items-api (simulated rest)``."""
    for vendor in executor.catalog.vendors.values():
        if (vendor.base_url or "").rstrip("/").endswith(f"/{profile}"):
            return f"vendor:{vendor.name} (simulated {profile})" if vendor.name != profile else f"vendor:{profile}"
    return profile


def query_command(python: str) -> str:
    """A shell command that queries the demo's Parquet files with DuckDB, from the demo's folder."""
    return f"{python} -c \"import duckdb; duckdb.sql(\\\"{QUERY}\\\").show()\""


def report(out: Console, target: Path, summary: RunSummary, executor: SyncTaskExecutor,
           simulator: Simulator) -> None:
    """Where the demo's rows are, which limits it met, and a DuckDB query over its Parquet files."""
    out.print("\n[bold]Files[/] (Parquet, one folder per dataset):")
    for dataset, what in DATASETS.items():
        plan = next((p for p in executor.catalog.plans.values() if p.dataset == dataset), None)
        rows = summary.plans.get(plan.name, {}).get("rows", 0) if plan else 0
        out.print(f"  {target / DATA_DIR / dataset}  {what}: {rows:,} rows this run", highlight=False)
    out.print(f"  state (finished tasks, quota usage): {target / '.synctask' / 'state.db'}", highlight=False)
    out.print("\n[bold]Limits[/]:")
    for name, child in simulator.children.items():
        if name == "ws":
            continue  # a stream has no request limit
        kinds = Counter(v["kind"] for v in child.stats.violations)
        over = ", ".join(f"{n} {_VIOLATIONS.get(kind, kind)}" for kind, n in kinds.items()) or "none over its limits"
        out.print(f"  {_vendor_named(executor, name)}: {child.stats.served:,} requests served; {over}", highlight=False)
    for name, s in summary.plans.items():
        parts = [f"froze {_times(s['freezes'])}" if s["freezes"] else "", f"retried {_times(s['retries'])}"
                 if s["retries"] else ""]
        if any(parts):
            out.print(f"  {name}: {', '.join(p for p in parts if p)}", highlight=False)
    out.print("\n[bold]Query the result[/] with DuckDB over the Parquet files:")
    command = query_command(shlex.quote(sys.executable))
    cd = "" if target.resolve() == Path.cwd().resolve() else f"cd {shlex.quote(str(target))} && "
    out.print(f"  {cd}{command}", markup=False, highlight=False)
    try:
        import duckdb

        with duckdb.connect() as con:
            rows_found = con.execute(QUERY.replace(f"'{DATA_DIR}/", f"'{target / DATA_DIR}/")).fetchall()
        for row in rows_found:
            out.print("    " + "  ".join(str(v) for v in row), highlight=False)
    except Exception as exc:  # the query is a courtesy; the data is already safe
        out.print(f"(the query failed: {exc})", markup=False)
    out.print(f"\nRun it again: finished tasks are skipped. Start over by deleting {target / DATA_DIR} "
              f"and {target / '.synctask'}.", highlight=False)


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n:,} times")


_VIOLATIONS = {  # the simulator's words for what it saw → ours
    "per_minute": "over the per-minute limit",
    "weight_per_minute": "over the weight per minute",
    "per_day": "over the daily limit",
    "ignored_retry_after": "already in flight when it answered 429",
    "while_banned": "while banned",
}
