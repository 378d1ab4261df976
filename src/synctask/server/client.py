"""Talking to a running ``synctask serve`` from the command line (standard library only).

The daemon's address comes from ``--url``, else ``SYNCTASK_URL``, else the default; its token,
when it has one, from ``SYNCTASK_API_TOKEN``. Every failure is a sentence: no daemon there, the
token refused, a plan unknown or in the wrong state.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from ..errors import SyncError

__all__ = ["DEFAULT_URL", "DaemonError", "call", "follow_events", "daemon_url"]

DEFAULT_URL = "http://127.0.0.1:8737"


class DaemonError(SyncError):
    """No daemon answered, or it refused the request; the message says which and why."""


def daemon_url(url: str | None) -> str:
    return (url or os.environ.get("SYNCTASK_URL") or DEFAULT_URL).rstrip("/")


def _request(url: str, path: str, method: str, body: Any | None, content_type: str | None = None
             ) -> urllib.request.Request:
    """``body``: JSON-encoded, or sent as it is when it is text with its ``content_type``."""
    headers = {"Accept": "application/json"}
    token = os.environ.get("SYNCTASK_API_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if isinstance(body, str) and content_type:
        data = body.encode()
        headers["Content-Type"] = content_type
    elif body is not None or method == "POST":
        data = json.dumps(body if body is not None else {}).encode()
        headers["Content-Type"] = "application/json"
    return urllib.request.Request(f"{url}{path}", data=data, method=method, headers=headers)


def call(url: str | None, method: str, path: str, body: Any | None = None, timeout: float = 30.0, *,
         content_type: str | None = None) -> dict[str, Any]:
    """One API call; its JSON answer, or ``DaemonError`` with the daemon's own sentence."""
    base = daemon_url(url)
    try:
        with urllib.request.urlopen(_request(base, path, method, body, content_type), timeout=timeout) as answer:
            return dict(json.loads(answer.read() or b"{}"))
    except urllib.error.HTTPError as exc:
        try:
            said = json.loads(exc.read()).get("error") or exc.reason
        except ValueError:
            said = exc.reason
        sep = "\n" if "\n" in str(said) else " "
        raise DaemonError(f"the daemon at {base} answered {exc.code}:{sep}{said}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        why = getattr(exc, "reason", exc)
        raise DaemonError(f"no synctask daemon answers at {base} ({why}); start one with `synctask serve "
                          "PLANS.toml`, or point --url / SYNCTASK_URL at it") from None


def follow_events(url: str | None, every_task: bool = False) -> Iterator[dict[str, Any]]:
    """The daemon's events as they happen (its server-sent-events stream), until it ends;
    ``every_task`` adds each task's start and end."""
    base = daemon_url(url)
    path = "/api/events?tasks=all" if every_task else "/api/events"
    try:
        answer = urllib.request.urlopen(_request(base, path, "GET", None), timeout=None)
    except urllib.error.HTTPError as exc:
        raise DaemonError(f"the daemon at {base} answered {exc.code}: {exc.reason}") from None
    except (urllib.error.URLError, ConnectionError) as exc:
        raise DaemonError(f"no synctask daemon answers at {base} ({getattr(exc, 'reason', exc)}); start one "
                          "with `synctask serve PLANS.toml`") from None
    with answer:
        for raw in answer:
            line = raw.decode().strip()
            if line.startswith("data: "):
                yield from json.loads(line[6:])  # one loop turn's events, in order
