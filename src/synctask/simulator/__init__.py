"""A vendor simulator on 127.0.0.1 for the demo, the tests and the benchmarks.

It behaves like the vendors synctask talks to (``tushare``: POST JSON with per-API per-minute and
daily limits and their Chinese messages; ``binance``: klines with request weights per clock
minute, 429 then a 418 ban; ``rest``: pagination and IETF RateLimit headers, per clock or sliding
minute, 429 then a 403 ban; ``ws``: a quote stream; ``all``: each under its own prefix), serves
deterministic rows from a seed, injects faults on request, and counts every limit violation it
sees (``GET /_admin/stats``). ``scale`` speeds time up: with ``scale=60`` a vendor "minute" lasts
one real second.
"""

from .faults import Faults
from .server import PROFILES, Simulator, SimulatorConfig

__all__ = ["Faults", "PROFILES", "Simulator", "SimulatorConfig"]
