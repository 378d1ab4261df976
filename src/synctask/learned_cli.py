"""``synctask limits``: the limits learned from vendors' answers, as the state keeps them, and
``--forget`` to drop one (its scope probes again from its start on the next run)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from .console import app, err, out


def _said(message: str) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(1)


@app.command()
def limits(
    plan_file: Annotated[str, typer.Argument(metavar="PLANS.toml", help="The plan file whose state to read.")],
    forget: Annotated[Optional[list[str]], typer.Option(
        "--forget", metavar="VENDOR", help="Forget what was learned of this vendor (or a scope such as "
        "dataset:daily); repeatable.")] = None,
    state: Annotated[Optional[str], typer.Option(
        "--state", metavar="PATH", help="State database (default: .synctask/state.db beside the plan file).")] = None,
) -> None:
    """Show the limits learned from vendors' answers (limits = "learn"), or forget them."""
    from .executor import SyncTaskExecutor
    from .learners import LEARNED
    from .learning import Learned
    from .lock import StateInUse

    path = Path(state) if state else Path(plan_file).resolve().parent / ".synctask" / "state.db"
    if not path.exists():
        _said(f"no state at {path}: nothing was learned yet (run the plans first)")
    executor = SyncTaskExecutor(state=path, base_dir=path.parent)
    try:
        executor.open_state()  # one writer: refuses while a run or a daemon uses the state
    except StateInUse as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        err.print("Stop it first (or ask it: synctask status shows what it learned).", markup=False)
        raise typer.Exit(75) from None
    try:
        learned: dict[str, list[dict]] = dict(executor.store.setting(LEARNED) or {})
        for name in forget or ():
            scope = name if ":" in name else f"vendor:{name}"
            if learned.pop(scope, None) is None:
                known = ", ".join(learned) or "none"
                _said(f"nothing was learned of {scope} (learned: {known})")
            out.print(f"{scope}: forgotten; it probes again from its start on the next run", markup=False)
        if forget:
            executor.store.save_setting(LEARNED, learned)
        for scope, records in learned.items():
            for record in records:
                item = Learned.from_record(record)
                when = datetime.fromtimestamp(item.at).astimezone().isoformat(timespec="seconds")
                out.print(f"{scope}: {item.describe()}, {when}", markup=False, highlight=False)
        if not learned and not forget:
            out.print("nothing learned yet", markup=False)
    finally:
        executor.close()
