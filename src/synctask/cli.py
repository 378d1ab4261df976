"""The ``synctask`` command. Bad input exits with status 2 and a message, never a traceback."""

from __future__ import annotations

import asyncio
import shlex
import sys
import tempfile
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer
from rich.console import Console

from . import __version__
from .config import PlanFile, load_plan_file
from .errors import PlanFileError, SyncError
from .limits import Limit
from .units import format_duration

if TYPE_CHECKING:
    from .executor import RunSummary

app = typer.Typer(
    name="synctask",
    help="Keep local datasets in sync with rate-limited data vendors.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"synctask {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Keep local datasets in sync with rate-limited data vendors."""


@app.command()
def check(
    plan_file: Annotated[str, typer.Argument(help="The plan file (TOML) to validate.")],
    plan: Annotated[Optional[list[str]], typer.Option("--plan", help="Only these plans (repeatable).")] = None,
) -> None:
    """Validate a plan file and print what would run: plans, task counts, schedules, limits."""
    try:
        plans = load_plan_file(plan_file)
        selected = [plans.plan(name) for name in plan] if plan else plans.plans
    except PlanFileError as exc:
        _fail(exc)
    _print_plans(plans, [p.name for p in selected])
    _print_datasets(plans, {p.dataset for p in selected})
    out.print(f"{plan_file}: OK, {len(selected)} plan(s) valid.")


@app.command()
def run(
    plan_file: Annotated[str, typer.Argument(help="The plan file (TOML) to run.")],
    plan: Annotated[Optional[list[str]], typer.Option("--plan", help="Only these plans (repeatable).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Concurrent tasks.")] = 16,
    state: Annotated[Optional[str], typer.Option(
        "--state", help="State database (default: .synctask/state.db beside the plan file).")] = None,
    grace: Annotated[float, typer.Option("--grace", min=0, help="Seconds in-flight tasks get after Ctrl-C.")] = 10.0,
    plain: Annotated[bool, typer.Option("--plain", help="Plain progress lines even on a terminal.")] = False,
) -> None:
    """Run plans now, in the foreground, with live progress. Ctrl-C stops gracefully and saves."""
    try:
        plans = load_plan_file(plan_file)
        selected = [plans.plan(name).name for name in plan] if plan else [p.name for p in plans.plans]
    except PlanFileError as exc:
        _fail(exc)
    base = Path(plan_file).resolve().parent
    state_path = Path(state) if state else base / ".synctask" / "state.db"
    resume = f"synctask run {shlex.quote(plan_file)}" + "".join(f" --plan {shlex.quote(p)}" for p in plan or [])
    if state:
        resume += f" --state {shlex.quote(state)}"
    _execute(plans, selected, workers=workers, state=state_path, base=base, grace=grace, plain=plain,
             resume=resume)


@app.command()
def demo(
    directory: Annotated[Optional[str], typer.Option(
        "--dir", help="Where the demo writes its plan file, data and state (default: a new temp folder).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 16,
    plain: Annotated[bool, typer.Option("--plain", help="Plain progress lines even on a terminal.")] = False,
) -> None:
    """Sync a sample of Python tasks under several limits: a freeze, retries and invalid requests."""
    target = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="synctask-demo-"))
    target.mkdir(parents=True, exist_ok=True)
    plan_path = target / "plans.toml"
    plan_path.write_text(files("synctask").joinpath("demo_plans.toml").read_text(encoding="utf-8"), encoding="utf-8")
    out.print(f"synctask demo: plan file {plan_path}")
    out.print("Three datasets under their own limits and a shared vendor limit. Watch 'minute-bars' get "
              "rate-limited and freeze, 'quotes-backfill' retry transient errors, and 'daily-bars' fail "
              "the requests for an unknown code while the rest goes on.\n")
    plans = load_plan_file(plan_path)
    resume = f"synctask run {shlex.quote(str(plan_path))}"
    state = target / ".synctask" / "state.db"
    summary = _execute(plans, [p.name for p in plans.plans], workers=workers, state=state,
                       base=target, grace=5.0, plain=plain, resume=resume, exit_after=False)
    db = target / "demo.db"
    out.print(f"\nRows are in {db} (tables quotes, daily, minute); state in {state}.")
    out.print("Query them:")
    out.print(f"  python3 -c \"import sqlite3; print(sqlite3.connect('{db}').execute("
              f"'SELECT symbol, COUNT(*), AVG(close) FROM quotes GROUP BY symbol').fetchall())\"", markup=False)
    out.print(f"Run it again (finished tasks are skipped): {resume}", markup=False)
    raise typer.Exit(130 if summary.interrupted else 0)


@app.command()
def simulate(
    profile: Annotated[str, typer.Option("--profile", help="tushare, binance, rest or ws.")] = "tushare",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 9000,
    host: Annotated[str, typer.Option("--host", help="Bind address (loopback unless you mean it).")] = "127.0.0.1",
    scale: Annotated[float, typer.Option("--scale", min=0.001, help="Vendor seconds per real second.")] = 1.0,
    faults: Annotated[str, typer.Option(
        "--faults", help="e.g. latency=5ms..40ms,5xx=0.03,malformed=0.01,drop=0.01")] = "",
    seed: Annotated[int, typer.Option("--seed")] = 7,
) -> None:
    """Run the vendor simulator on its own (admin stats at /_admin/stats)."""
    from .simulator import Faults, Simulator, SimulatorConfig

    if profile not in ("tushare", "binance", "rest", "ws"):
        _fail(ValueError(f"unknown profile {profile!r}; use tushare, binance, rest or ws"))
    try:
        config = SimulatorConfig(profile, scale=scale, seed=seed, faults=Faults.parse(faults))
    except ValueError as exc:
        _fail(exc)

    async def serve() -> None:
        async with Simulator(config, host=host, port=port) as sim:
            out.print(f"simulating {profile} on {sim.url} (scale {scale:g}); token 'demo-token'; Ctrl-C stops")
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except OSError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _execute(plans: PlanFile, selected: list[str], *, workers: int, state: Path, base: Path, grace: float,
             plain: bool, resume: str, exit_after: bool = True) -> RunSummary:
    from .display import ProgressDisplay, summary_table
    from .executor import SyncTaskExecutor

    try:
        executor = SyncTaskExecutor(workers=workers, state=state, base_dir=base, grace=grace)
        executor.load(plans, only=selected)
    except (SyncError, ValueError) as exc:
        _fail(exc)

    async def main() -> RunSummary:
        task = asyncio.create_task(executor.run(handle_signals=True))
        display = ProgressDisplay(executor, out, plain=True if plain else None)
        return await display.run_until(task)

    try:
        summary = asyncio.run(main())
    finally:
        executor.close()
    out.print(summary_table(summary))
    messages = {name: p.last_message for name, p in executor.progress.plans.items() if p.last_message}
    for name, message in messages.items():
        out.print(f"{name}: {message}", markup=False, highlight=False)
    if summary.interrupted:
        done = sum(s["done"] for s in summary.plans.values())
        left = sum((s["total"] or 0) - s["done"] - s["failed"] - s["skipped"] for s in summary.plans.values())
        err.print(f"Interrupted. Saved in {state}: {done:,} tasks finished in this run; "
                  f"{left:,} left, which the next run picks up (finished ones are skipped).")
        err.print(f"Resume with: {resume}", markup=False)
        if exit_after:
            raise typer.Exit(130)
    elif exit_after and any(s["state"] == "failed" for s in summary.plans.values()):
        raise typer.Exit(1)
    return summary


def _fail(exc: Exception) -> NoReturn:
    err.print(f"[bold red]error:[/] {exc}", markup=True)
    err.print("Nothing was run. Fix the places above and try again.")
    raise typer.Exit(2)


def _print_plans(plans: PlanFile, names: list[str]) -> None:
    now = datetime.now(UTC)
    for plan in plans.plans:
        if plan.name not in names:
            continue
        due = plan.schedule.next_due(now)
        tasks = len(plan.params.bind(due or now))
        retry = plan.retry
        vendor = plans.datasets[plan.dataset].vendor
        when = f"next due {due.isoformat(timespec='minutes')}" if due else "runs when started"
        timeout = format_duration(plan.timeout) if plan.timeout else "none"
        out.print(f"plan {plan.name}  (dataset {plan.dataset}, vendor {vendor})", style="bold")
        out.print(f"  tasks     {tasks:,}")
        out.print(f"  schedule  {plan.schedule}, {when}")
        out.print(f"  priority  {plan.priority}   timeout {timeout}   retry {retry.attempts} attempts, "
                  f"backoff {format_duration(retry.base)}..{format_duration(retry.cap)}")


def _print_datasets(plans: PlanFile, names: set[str]) -> None:
    for name, ds in plans.datasets.items():
        if name not in names:
            continue
        vendor = plans.vendors[ds.vendor]
        sink = ds.sink.get("kind", "none") if ds.sink else "none"
        out.print(f"dataset {name}  (api {ds.api}, weight {ds.weight}, sink {sink})", style="bold")
        out.print(f"  limits    dataset: {_limits(ds.limits)}")
        out.print(f"            vendor {vendor.name}: {_limits(vendor.limits)}")
        if vendor.node_limits:
            out.print(f"            per node: {_limits(vendor.node_limits)}")


def _limits(limits: tuple[Limit, ...]) -> str:
    return ", ".join(str(limit) for limit in limits) or "none"


def main() -> None:
    """Entry point: typer's usage errors already exit 2; anything else unexpected is a bug."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
