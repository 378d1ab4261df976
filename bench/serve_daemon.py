"""Shared by the ``serve_*`` benchmarks: a ``synctask serve`` process over a plan of Python tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TOKEN = "serve-bench-token"  # the daemon's API token (SYNCTASK_API_TOKEN), sent with every call


@contextmanager
def daemon(module: str, tasks: str, plans: str, **env: str) -> Iterator[tuple[str, Path]]:
    """Write ``tasks`` as ``module`` and ``plans`` into a fresh folder, serve them on a free port
    with 64 workers, and yield the API's URL and the folder; SIGTERM at the end."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / f"{module}.py").write_text(tasks)
        (work / "plans.toml").write_text(plans)
        # The folder's tasks, then whatever PYTHONPATH says (an older synctask, to compare side by side).
        path = os.pathsep.join(p for p in (str(work), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "SYNCTASK_API_TOKEN": TOKEN,
               "SYNCTASK_RUNTIME_DIR": str(work / "runtime"), **{k: v.format(work=work) for k, v in env.items()}}
        opener = urllib.request.build_opener()
        opener.addheaders = [("Authorization", f"Bearer {TOKEN}"), ("Content-Type", "application/json")]
        urllib.request.install_opener(opener)  # every call of the benchmark carries the daemon's token
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
