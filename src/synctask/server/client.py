"""Talking to a running ``synctask serve`` from the command line (standard library only).

The daemon's address comes from ``--url``, else ``SYNCTASK_URL``, else the one daemon of this user
that runs (its runtime file), else the default; its token from ``SYNCTASK_API_TOKEN``, else from
that daemon's runtime file. Every failure is a sentence: no daemon there, the token refused, a
plan unknown or in the wrong state.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from ..errors import SyncError
from . import runtime

__all__ = ["DEFAULT_URL", "DaemonError", "call", "follow_events", "daemon_url"]

DEFAULT_URL = "http://127.0.0.1:8737"


class DaemonError(SyncError):
    """No daemon answered, or it refused the request; the message says which and why."""


def daemon_url(url: str | None) -> str:
    """Where the daemon is: ``url``, ``$SYNCTASK_URL``, the only one running, or the default."""
    given = url or os.environ.get("SYNCTASK_URL")
    if given:
        return _checked(given.rstrip("/"))
    daemons = runtime.running()
    if len(daemons) > 1:
        listed = "; ".join(f"{d.url} (pid {d.pid}, {d.plan_file})" for d in daemons)
        raise DaemonError(f"{len(daemons)} synctask daemons are running: {listed}; choose one with --url or "
                          "SYNCTASK_URL")
    return daemons[0].url if daemons else DEFAULT_URL


def _checked(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DaemonError(f"--url {url!r} is not a daemon's address: give one like {DEFAULT_URL}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise DaemonError(f"--url {url!r} has a port that is not a number: give one like {DEFAULT_URL}") from None
    return url


def _token(url: str) -> str | None:
    given = os.environ.get("SYNCTASK_API_TOKEN")
    if given:
        return given
    found = runtime.find(url)
    return found.token if found is not None else None


def _request(url: str, path: str, method: str, body: Any | None, content_type: str | None = None
             ) -> urllib.request.Request:
    """``body``: JSON-encoded, or sent as it is when it is text with its ``content_type``. Every
    call that changes something says its body's type (the daemon refuses it otherwise)."""
    headers = {"Accept": "application/json"}
    token = _token(url)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if isinstance(body, str) and content_type:
        data = body.encode()
        headers["Content-Type"] = content_type
    elif body is not None or method != "GET":
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
    except (ValueError, http.client.HTTPException) as exc:  # an answer that is not JSON: not a synctask daemon
        raise DaemonError(f"what answers at {base} is not a synctask daemon ({type(exc).__name__}); point --url "
                          "or SYNCTASK_URL at the daemon") from None
    except urllib.error.HTTPError as exc:
        raise _refused(base, exc) from None
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
        raise _refused(base, exc) from None
    except (urllib.error.URLError, ConnectionError) as exc:
        raise DaemonError(f"no synctask daemon answers at {base} ({getattr(exc, 'reason', exc)}); start one "
                          "with `synctask serve PLANS.toml`") from None
    try:
        with answer:
            for raw in answer:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    yield from json.loads(line[6:])  # one loop turn's events, in order
    except (OSError, http.client.HTTPException) as exc:
        raise DaemonError(f"the daemon at {base} went away while its events were followed "
                          f"({type(exc).__name__}): it was stopped, restarted or killed") from None
    raise DaemonError(f"the daemon at {base} ended its event stream: it was stopped or restarted")


def _refused(base: str, exc: urllib.error.HTTPError) -> DaemonError:
    """The daemon's own sentence for a refusal (a wrong token, an unknown plan, a state)."""
    try:
        said = json.loads(exc.read()).get("error") or exc.reason
    except ValueError:
        said = exc.reason
    sep = "\n" if "\n" in str(said) else " "
    return DaemonError(f"the daemon at {base} answered {exc.code}:{sep}{said}")
