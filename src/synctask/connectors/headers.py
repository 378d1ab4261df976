"""What a vendor's rate-limit headers say: its quotas (to adopt at once when a limit is learned)
and its own count of what we used (to never run past it).

Every form seen in the wild, tolerant of spacing and unknown parameters:

- IETF draft, early (-03 to -07): ``RateLimit-Policy: 100;w=60, 1000;w=3600``,
  ``RateLimit-Limit: 100, 100;w=60`` (quota policies after the current limit),
  ``RateLimit-Remaining``/``RateLimit-Reset``, or ``RateLimit: limit=100, remaining=5, reset=30``;
- IETF draft, current (-08 on): ``RateLimit-Policy: "burst";q=100;w=60, "day";q=1000;w=86400``
  and ``RateLimit: "burst";r=5;t=30`` (remaining and reset of the named policy);
- ``X-RateLimit-Limit/Remaining/Reset`` (GitHub, Twitter...): a count with no window, so it
  freezes before a 429 but states no quota (an epoch-seconds reset is not a wait).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .base import Observation, Response

__all__ = ["rate_limit_observations", "Policy"]

_ITEMS = re.compile(r'(?:"[^"]*"|[^,"])+')  # comma-separated items, commas inside quotes kept


@dataclass(frozen=True)
class Policy:
    """A stated quota: ``quota`` per ``window`` seconds (``name`` in the current draft's form)."""

    quota: int
    window: float
    name: str | None = None


def rate_limit_observations(response: Response) -> list[Observation]:
    """The vendor's stated quotas and its own count of what we used, from its headers."""
    if "ratelimit" not in ",".join(response.headers).lower():
        return []  # (every header read below has it in its name: one look instead of eleven lookups)
    policies, source = _policies(response)
    limit, remaining, reset, name = _count(response)
    if reset is not None and reset > 10**9:  # an epoch timestamp, not seconds (GitHub's style)
        reset = None
    freeze = reset if remaining == 0 and reset is not None else None
    counted = _counted(policies, limit, name) if remaining is not None else None
    found = []
    for policy in policies:
        if policy is counted:
            used = max(policy.quota - remaining, 0) if remaining is not None else 0
            found.append(Observation("vendor", used, policy.window, freeze, policy.quota, source))
        else:
            found.append(Observation("vendor", 0, policy.window, None, policy.quota, source))
    if counted is None and remaining is not None:
        if limit is not None:  # a count over a window nobody stated: every window holds it
            found.append(Observation("vendor", max(limit - remaining, 0), None, freeze))
        elif freeze:
            found.append(Observation("vendor", 0, None, freeze))
    return found


def _policies(response: Response) -> tuple[list[Policy], str | None]:
    """The quotas stated, and which header stated them."""
    for header in ("RateLimit-Policy", "X-RateLimit-Policy"):
        value = response.header(header)
        if value:
            found = [p for p in map(_policy, _ITEMS.findall(value)) if p is not None]
            if found:
                return found, f"the {header} header"
    for header in ("RateLimit-Limit", "X-RateLimit-Limit"):  # early draft: "100, 100;w=60, 1000;w=3600"
        value = response.header(header)
        if value and ";" in value:
            found = [p for p in map(_policy, _ITEMS.findall(value)) if p is not None]
            if found:
                return found, f"the {header} header"
    return [], None


def _policy(item: str) -> Policy | None:
    """``100;w=60`` or ``"burst";q=100;w=60`` (None: not a quota with a window)."""
    head, params = _split(item)
    try:
        if head.isdigit():
            quota = int(head)
        elif "q" in params:
            quota = int(params["q"])
        else:
            return None
        window = float(params["w"])
    except (KeyError, ValueError):
        return None
    if quota < 1 or not 0 < window < 10**8:
        return None
    return Policy(quota, window, None if head.isdigit() else head.strip('"'))


def _count(response: Response) -> tuple[int | None, int | None, float | None, str | None]:
    """(limit, remaining, reset seconds, the policy's name) from whichever header says them."""
    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    name: str | None = None
    combined = response.header("RateLimit")
    if combined:
        for item in _ITEMS.findall(combined):
            head, params = _split(item)
            if "=" in head:  # early combined form: limit=100, remaining=5, reset=30
                key, _, said = head.partition("=")
                limit = _int(said) if key.strip() == "limit" else limit
                remaining = _int(said) if key.strip() == "remaining" else remaining
                reset = _float(said) if key.strip() == "reset" else reset
            elif "r" in params:  # current form: "burst";r=5;t=30
                name, remaining, reset = head.strip('"'), _int(params["r"]), _float(params.get("t", ""))
                break
    for prefix in ("RateLimit-", "X-RateLimit-"):
        value = response.header(prefix + "Limit")
        if value:
            limit = _int(value.split(",")[0]) if limit is None else limit
        value = response.header(prefix + "Remaining")
        remaining = _int(value) if value and remaining is None else remaining
        value = response.header(prefix + "Reset")
        reset = _float(value) if value and reset is None else reset
    return limit, remaining, reset, name


def _counted(policies: list[Policy], limit: int | None, name: str | None) -> Policy | None:
    """The policy a count speaks of: the one named, else the one whose quota is the limit said,
    else the only one."""
    for policy in policies:
        if name is not None and policy.name == name:
            return policy
    if name is None:
        for policy in policies:
            if limit is not None and policy.quota == limit:
                return policy
        if len(policies) == 1 and limit is None:
            return policies[0]
    return None


def _split(item: str) -> tuple[str, dict[str, str]]:
    head, *rest = item.split(";")
    params = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return head.strip(), params


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None
