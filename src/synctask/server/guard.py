"""Who may talk to the daemon: every request passes these checks before any handler runs.

The daemon holds the user's vendor keys and can be made to run plans, so anything on the machine
is a possible caller, every web page the user opens included. As Jupyter's server does:

1. ``Host`` must name this daemon (a loopback address, ``localhost``, the address it is bound to,
   or a name the owner allowed): a page on ``attacker.example`` re-pointed at 127.0.0.1 (DNS
   rebinding) sends its own name and is refused.
2. A request from a page of another origin (``Origin`` not this daemon's, or ``Sec-Fetch-Site``
   cross-site or same-site) is refused: no page but the dashboard may call the API.
3. Every call but ``/healthz`` and the dashboard's own files needs the owner's token
   (``Authorization: Bearer``), loopback included; ``/metrics`` too unless made public.
4. A call that changes anything must say its body is JSON or TOML: a browser sends such a
   request to another origin only after asking (a preflight this daemon never grants), so no
   "simple" cross-site request (``text/plain``, a form) can act.

The checks are pure functions of the request's method, path and headers, so they are tested
without a server; ``guard`` wraps them as aiohttp middleware.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["Policy", "Refusal", "check", "guard", "host_name", "allowed_hosts", "LOOPBACK_NAMES", "BODY_TYPES"]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
BODY_TYPES = frozenset({"application/json", "application/toml"})  # never sent cross-site without asking
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_CROSS = frozenset({"cross-site", "same-site"})  # Sec-Fetch-Site values of another origin's page
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Policy:
    """What this daemon accepts: its token, the address it is bound to, names the owner allowed,
    and whether ``/metrics`` may be read without the token."""

    token: str
    bound: str = "127.0.0.1"
    hosts: frozenset[str] = field(default_factory=frozenset)  # more names for Host (``--allow-host``)
    metrics_public: bool = False

    def host_allowed(self, name: str) -> bool:
        """Whether ``Host: name`` names this daemon (``name`` without its port, lower case)."""
        if name in LOOPBACK_NAMES or name in self.hosts or name == self.bound.lower():
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False  # a name: only those above (DNS rebinding sends the attacker's)
        # An address literal cannot be re-pointed by a DNS answer: loopback always, any address
        # when the daemon listens on every interface.
        return address.is_loopback or self.bound in ("0.0.0.0", "::")

    def public(self, path: str) -> bool:
        """What needs no token: the health check, and the dashboard's page and files (they hold
        no data; the page sends the token with each API call)."""
        if path in ("/healthz", "/") or path.startswith("/static/"):
            return True
        return path == "/metrics" and self.metrics_public


@dataclass(frozen=True)
class Refusal:
    """A refused request: its HTTP status and the sentence that says why and what to do."""

    status: int
    message: str


def host_name(host: str) -> str:
    """``Host`` without its port, lower case, brackets and a final dot dropped."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def check(policy: Policy, method: str, path: str, headers: Mapping[str, str], scheme: str = "http"
          ) -> Refusal | None:
    """None when the request may go on; else why it is refused. The order matters: a foreign
    Host or origin is refused before the token is looked at, so neither learns whether it is right."""
    host = headers.get("Host", "")
    if not policy.host_allowed(host_name(host)):
        return Refusal(403, f"this synctask daemon does not answer to Host {host!r}: use http://127.0.0.1 or "
                            "localhost, or start it with --allow-host NAME")
    public = method in _SAFE_METHODS and policy.public(path)  # reading only: nothing is open to change
    if not public:
        origin = headers.get("Origin")
        if origin is not None and origin.lower() != f"{scheme}://{host}".lower():
            return Refusal(403, f"requests from pages of other origins ({origin}) are refused; only this daemon's "
                                "dashboard may call its API")
        if headers.get("Sec-Fetch-Site", "").lower() in _CROSS:
            return Refusal(403, "requests from pages of other sites are refused; only this daemon's dashboard may "
                                "call its API")
    if not public:
        given = headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {policy.token}".encode()):
            return Refusal(401, "this daemon needs its token: send Authorization: Bearer TOKEN (the token is in "
                                "the daemon's runtime file, which the synctask commands read by themselves, or in "
                                "SYNCTASK_API_TOKEN)")
    if method not in _SAFE_METHODS:
        kind = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if kind not in BODY_TYPES:
            wanted = " or ".join(sorted(BODY_TYPES))
            return Refusal(415, f"a call that changes something must send Content-Type {wanted} (got {kind or 'none'})")
    return None


def guard(policy: Policy, refused: Callable[[Refusal], web.StreamResponse]) -> Middleware:
    """The checks as aiohttp middleware; ``refused`` writes a refusal's answer."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = check(policy, request.method, request.path, request.headers, request.scheme)
        if refusal is not None:
            return refused(refusal)
        return await handler(request)

    return middleware


def allowed_hosts(names: Iterable[str]) -> frozenset[str]:
    """``--allow-host`` values as ``Host`` names."""
    return frozenset(host_name(name) for name in names if name.strip())
