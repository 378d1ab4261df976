"""``synctask demo``: four simulated vendors, the plan file that syncs them, and what to say after.

The vendors run in-process (``demo_profiles``); their limits are the plan file's, except where the
plan file is deliberately wrong (Binance: it says 50 weight per window, the account allows 40) so
that a freeze happens and recovers. Everything is deterministic but the timing.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from string import Template

from .simulator import Faults, SimulatorConfig

__all__ = ["PLAN_FILE", "DATA_DIR", "DATASETS", "QUERY", "demo_profiles", "write_plan_file", "query_command"]

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
        "binance": SimulatorConfig("binance", scale=60, faults=faults, binance_weight_per_minute=40,
                                   binance_ban_seconds=60),
        "rest": SimulatorConfig("rest", scale=60, faults=faults, rest_per_minute=30, rest_items_per_day=35),
        "ws": SimulatorConfig("ws", ws_per_second=50, ws_drop_every=500),
    }


def write_plan_file(directory: Path, url: str, port: int) -> Path:
    """Write the demo's plan file, pointing at the simulator on ``url``, into ``directory``."""
    template = files("synctask").joinpath("demo_plans.toml").read_text(encoding="utf-8")
    path = directory / PLAN_FILE
    path.write_text(Template(template).substitute(url=url, port=port, query=query_command("python")), encoding="utf-8")
    return path


def query_command(python: str) -> str:
    """A shell command that queries the demo's Parquet files with DuckDB, from the demo's folder."""
    return f"{python} -c \"import duckdb; duckdb.sql(\\\"{QUERY}\\\").show()\""
