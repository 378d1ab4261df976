"""Shared by the ``serve_*`` benchmarks: a ``synctask serve`` process over a plan of Python tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def daemon(module: str, tasks: str, plans: str, **env: str) -> Iterator[tuple[str, Path]]:
    """Write ``tasks`` as ``module`` and ``plans`` into a fresh folder, serve them on a free port
    with 64 workers, and yield the API's URL and the folder; SIGTERM at the end."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / f"{module}.py").write_text(tasks)
        (work / "plans.toml").write_text(plans)
        env = {**os.environ, "PYTHONPATH": str(work), **{k: v.format(work=work) for k, v in env.items()}}
        proc = subprocess.Popen([sys.executable, "-m", "synctask.cli", "serve", str(work / "plans.toml"), "--port",
                                 "0", "--workers", "64"], cwd=work, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split("control API on ")[1].split()[0]
            time.sleep(1.0)  # under way
            yield url, work
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
