"""Sampling lengths (tokens) and times (seconds) from the workload's distributions."""

from __future__ import annotations

import math

import numpy as np

from loadgen.spec.distributions import (
    Choice,
    ExponentialSeconds,
    Fixed,
    LengthSpec,
    Normal,
    Seconds,
    SecondsSpec,
    Uniform,
    UniformSeconds,
)


class LengthSampler:
    """Draws integer lengths from one distribution with its own random stream."""

    def __init__(self, spec: LengthSpec, rng: np.random.Generator):
        self.spec = spec
        self.rng = rng
        if isinstance(spec, Choice):
            w = np.asarray(spec.weights if spec.weights is not None else [1.0] * len(spec.values), dtype=float)
            self._p = w / w.sum()
        if isinstance(spec, Normal) and spec.dist == "lognormal":
            self._mu, self._sigma = _lognormal(spec.mean, spec.std)

    def __call__(self) -> int:
        s = self.spec
        if isinstance(s, Fixed):
            return s.value
        if isinstance(s, Uniform):
            return int(self.rng.integers(s.min, s.max, endpoint=True))
        if isinstance(s, Choice):
            return int(s.values[self.rng.choice(len(s.values), p=self._p)])
        if s.dist == "normal":
            x = self.rng.normal(s.mean, s.std)
        else:
            x = self.rng.lognormal(self._mu, self._sigma)
        hi = s.max if s.max is not None else math.inf
        return int(min(max(round(x), s.min), hi))


def _lognormal(mean: float, std: float) -> tuple[float, float]:
    """The underlying normal's mu and sigma of a log-normal with this mean and std."""
    var = math.log1p((std / mean) ** 2)
    return math.log(mean) - var / 2, math.sqrt(var)


class SecondsSampler:
    """Draws times in seconds (think times) from one distribution with its own random stream."""

    def __init__(self, spec: SecondsSpec, rng: np.random.Generator):
        self.spec, self.rng = spec, rng

    @property
    def mean(self) -> float:
        s = self.spec
        if isinstance(s, Seconds):
            return s.value
        if isinstance(s, UniformSeconds):
            return (s.min + s.max) / 2
        return s.mean

    def __call__(self) -> float:
        s = self.spec
        if isinstance(s, Seconds):
            return s.value
        if isinstance(s, UniformSeconds):
            return float(self.rng.uniform(s.min, s.max))
        if isinstance(s, ExponentialSeconds):
            return float(self.rng.exponential(s.mean))
        return float(self.rng.lognormal(*_lognormal(s.mean, s.std)))
