"""Open-loop arrival processes. A pacer answers one question: when is the next send?"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Pacer(Protocol):
    def next_offset(self) -> float:
        """Seconds from the stage's start to the next scheduled send."""
        ...


class ConstantPacer:
    def __init__(self, rate: float):
        self.gap = 1.0 / rate
        self.n = 0

    def next_offset(self) -> float:
        # Multiply rather than accumulate so that rounding errors do not drift over long runs.
        t = self.n * self.gap
        self.n += 1
        return t


class GammaPacer:
    """Gamma-distributed gaps with mean 1/rate; shape 1 is a Poisson process, < 1 burstier, > 1 smoother."""

    def __init__(self, rate: float, shape: float, rng: np.random.Generator):
        self.rate, self.shape, self.rng = rate, shape, rng
        self.t = 0.0
        self.first = True

    def next_offset(self) -> float:
        if self.first:  # the first request goes at the stage's start, as with a constant rate
            self.first = False
            return 0.0
        self.t += float(self.rng.gamma(self.shape, 1.0 / (self.rate * self.shape)))
        return self.t


def make_pacer(arrival: str, rate: float, burstiness: float, rng: np.random.Generator) -> Pacer:
    if arrival == "constant":
        return ConstantPacer(rate)
    if arrival == "poisson":
        return GammaPacer(rate, 1.0, rng)
    if arrival == "gamma":
        return GammaPacer(rate, burstiness, rng)
    raise ValueError(f"no pacer for arrival {arrival!r}")
