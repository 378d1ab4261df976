"""Faults the simulator injects, from a seeded random source so runs repeat exactly."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Faults:
    """Rates are probabilities per request; latency is uniform in [min, max] real seconds."""

    latency_min: float = 0.0
    latency_max: float = 0.0
    error_rate: float = 0.0      # answer 500/503
    malformed_rate: float = 0.0  # a truncated or wrong-shaped body with status 200
    drop_rate: float = 0.0       # close the connection without answering
    stamp_min: float = 0.0       # the vendor counts a request this long after reading it
    stamp_max: float = 0.0       # (uniform in [min, max]: a busy vendor's queue before its limiter)

    @classmethod
    def parse(cls, text: str) -> Faults:
        """``"latency=5ms..40ms,5xx=0.03,malformed=0.01,drop=0.01,stamp=0ms..50ms"`` → Faults."""
        from ..units import parse_duration_range

        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"expected key=value in faults, got {part!r}")
            if key == "latency":
                values["latency_min"], values["latency_max"] = parse_duration_range(value)
            elif key == "stamp":
                values["stamp_min"], values["stamp_max"] = parse_duration_range(value)
            elif key in ("5xx", "error"):
                values["error_rate"] = float(value)
            elif key == "malformed":
                values["malformed_rate"] = float(value)
            elif key == "drop":
                values["drop_rate"] = float(value)
            else:
                raise ValueError(f"unknown fault {key!r}; use latency, stamp, 5xx, malformed or drop")
        return cls(**values)


class FaultDice:
    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults = faults
        self.rng = random.Random(seed)
        self.stamp_rng = random.Random(seed + 1)  # its own draws: other faults repeat as before

    def latency(self) -> float:
        f = self.faults
        return self.rng.uniform(f.latency_min, f.latency_max) if f.latency_max > 0 else 0.0

    def stamp_delay(self) -> float:
        f = self.faults
        return self.stamp_rng.uniform(f.stamp_min, f.stamp_max) if f.stamp_max > 0 else 0.0

    def pick(self) -> str | None:
        """Which fault hits this request: "drop", "error", "malformed" or None."""
        f = self.faults
        roll = self.rng.random()
        for name, rate in (("drop", f.drop_rate), ("error", f.error_rate), ("malformed", f.malformed_rate)):
            if roll < rate:
                return name
            roll -= rate
        return None
