"""The ``synctask`` command. Bad input exits with status 2 and a message, never a traceback."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import __version__
from .config import PlanFile, load_plan_file
from .errors import PlanFileError
from .limits import Limit
from .units import format_duration

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
        err.print(f"[bold red]error:[/] {exc}", markup=True)
        err.print("Nothing was run. Fix the places above and check again.")
        raise typer.Exit(2) from None
    _print_plans(plans, [p.name for p in selected])
    _print_datasets(plans, {p.dataset for p in selected})
    out.print(f"{plan_file}: OK, {len(selected)} plan(s) valid.")


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
