"""Sampling prompt and output lengths from the workload's distributions."""

from __future__ import annotations

import math

import numpy as np

from loadgen.spec.workload import Choice, Fixed, LengthSpec, Normal, Uniform


class LengthSampler:
    """Draws integer lengths from one distribution with its own random stream."""

    def __init__(self, spec: LengthSpec, rng: np.random.Generator):
        self.spec = spec
        self.rng = rng
        if isinstance(spec, Choice):
            w = np.asarray(spec.weights if spec.weights is not None else [1.0] * len(spec.values), dtype=float)
            self._p = w / w.sum()
        if isinstance(spec, Normal) and spec.dist == "lognormal":
            # Parameters of the underlying normal so that the samples have the requested mean and std.
            var = math.log1p((spec.std / spec.mean) ** 2)
            self._mu, self._sigma = math.log(spec.mean) - var / 2, math.sqrt(var)

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
