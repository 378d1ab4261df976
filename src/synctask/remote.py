"""The ``synctask`` commands that talk to a running daemon: status, control, add, reload, workers,
events. Each finds the daemon and its token by itself (see ``server.client``), prints a table on a
terminal and plain text when piped, takes ``--json``, and says in a sentence when no daemon
answers or it refuses (exit 1).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .console import app, err, fail, out
from .model import MAX_WORKERS
from .units import format_duration

_URL = Annotated[Optional[str], typer.Option(
    "--url", metavar="URL", help="The daemon (default: $SYNCTASK_URL, else http://127.0.0.1:8737).")]
_JSON = Annotated[bool, typer.Option("--json", metavar="", help="The daemon's answer as JSON.")]


@app.command()
def status(
    plan: Annotated[Optional[str], typer.Argument(metavar="[PLAN]", help="One plan, with its recent failures.")
                    ] = None,
    url: _URL = None,
    json_out: _JSON = False,
) -> None:
    """Show the daemon's plans: state, progress, rate, ETA, freezes, next run."""
    answer = _daemon(url, "GET", f"/api/plans/{_quote(plan)}" if plan else "/api/plans")
    if json_out:
        print(json.dumps(answer, indent=2))
        return
    views = [answer] if plan else answer["plans"]
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("plan", "state", "done", "failed", "in flight", "rate/s", "eta", "next run"):
        table.add_column(column, justify="right" if column in ("done", "failed", "in flight", "rate/s") else "left")
    for v in views:
        total = f"/{v['total']:,}" if v.get("total") is not None else ""
        eta = format_duration(v["eta_seconds"]) if v.get("eta_seconds") else "-"
        table.add_row(v["name"], v["state"], f"{v['done'] + v['skipped']:,}{total}", f"{v['failed']:,}",
                      str(v["in_flight"]), f"{v['rate']:.1f}", eta, v.get("next_due") or "-")
    out.print(table)
    if not plan:  # and what every limit allows now, in words
        for scope in _daemon(url, "GET", "/api/vendors")["scopes"]:
            said = "; ".join(limit["text"] for limit in scope["limits"])
            freeze = scope.get("freeze")
            if freeze is not None:
                ends = format_duration(max(round(scope["frozen_until"] - time.time()), 1))
                said += f"; {'banned' if freeze['ban'] else 'frozen'} for {ends}"
            out.print(f"  {scope['scope']}: {said}", markup=False, highlight=False)
    for failure in (answer.get("recent_failures") or [])[-10:] if plan else []:
        said = f"{failure['kind']} (try {failure.get('attempt', '?')}): {failure['task_id']}: {failure['message']}"
        out.print(f"  {said}", markup=False, highlight=False)


def _control(action: str, help_text: str) -> None:
    def command(plan: Annotated[str, typer.Argument(metavar="PLAN", help="The plan's name.")], url: _URL = None,
                json_out: _JSON = False) -> None:
        if action == "remove":
            answer = _daemon(url, "DELETE", f"/api/plans/{_quote(plan)}")
        else:
            answer = _daemon(url, "POST", f"/api/plans/{_quote(plan)}/{action}")
        if json_out:
            print(json.dumps(answer))
        elif action == "remove":
            out.print(f"{plan}: removed", markup=False, highlight=False)
        else:
            note = "" if answer.get("changed") else f" (already {answer['state']})"
            out.print(f"{plan}: {answer['state']}{note}", markup=False, highlight=False)

    command.__doc__ = help_text
    app.command(name=action)(command)


for _action, _help in (("start", "Start a plan on the daemon now (a stopped or paused one continues)."),
                       ("stop", "Stop a plan: in-flight tasks are cancelled and return to pending."),
                       ("pause", "Pause a plan: nothing more is sent; in-flight tasks finish."),
                       ("resume", "Resume a paused or stopped plan."),
                       ("cancel", "Cancel a plan's run: pending work is dropped."),
                       ("retry", "Run a plan's failed tasks again (once its run has ended)."),
                       ("remove", "Cancel a plan and forget it on the daemon (finished work stays recorded).")):
    _control(_action, _help)


@app.command()
def add(
    plan_file: Annotated[str, typer.Argument(metavar="PLANS.toml", help="Plans to add (TOML or JSON); they may use "
                                             "the daemon's vendors and datasets.")],
    url: _URL = None,
    json_out: _JSON = False,
) -> None:
    """Add plans to the running daemon (validated as check validates; kept across restarts)."""
    try:
        text = Path(plan_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(ValueError(f"{plan_file}: cannot read the file: {exc}"))
    kind = "application/json" if plan_file.endswith(".json") else "application/toml"
    answer = _daemon(url, "POST", "/api/plans", text, content_type=kind)
    if json_out:
        print(json.dumps(answer))
        return
    for view in answer["plans"]:
        out.print(f"{view['name']}: added, {view['state']}", markup=False, highlight=False)


@app.command()
def reload(url: _URL = None, json_out: _JSON = False) -> None:
    """Make the daemon read its plan file again: added, changed and removed plans apply."""
    answer = _daemon(url, "POST", "/api/reload")
    if json_out:
        print(json.dumps(answer))
        return
    said = [f"{kind}: {', '.join(names)}" for kind, names in answer.items() if names]
    out.print("; ".join(said) or "the plan file has no changes", markup=False, highlight=False)


@app.command(name="workers")
def set_workers(
    count: Annotated[int, typer.Argument(metavar="N", min=1, max=MAX_WORKERS, help="Concurrent tasks.")],
    url: _URL = None,
    json_out: _JSON = False,
) -> None:
    """Set how many tasks the daemon runs at once."""
    answer = _daemon(url, "PUT", "/api/workers", {"workers": count})
    if json_out:
        print(json.dumps(answer))
        return
    out.print(f"workers: {answer['workers']}", markup=False, highlight=False)


@app.command()
def events(
    url: _URL = None,
    tasks: Annotated[bool, typer.Option("--tasks", help="Also every task's start and end (busy).")] = False,
    progress: Annotated[bool, typer.Option("--progress", help="Also the twice-a-second progress snapshots.")
                        ] = False,
) -> None:
    """Follow the daemon's events as JSON lines: plan changes, failures, retries, freezes (Ctrl-C to stop)."""
    from .server.client import DaemonError, follow_events

    try:
        for event in follow_events(url, every_task=tasks):
            if progress or event.get("type") != "progress":
                print(json.dumps(event), flush=True)
    except DaemonError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None


def _daemon(url: str | None, method: str, path: str, body: object = None, content_type: str | None = None
            ) -> dict[str, Any]:
    """One call to the daemon; a clear message and exit 1 when none answers or it refuses."""
    from .server.client import DaemonError, call

    try:
        return call(url, method, path, body, content_type=content_type)
    except DaemonError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
