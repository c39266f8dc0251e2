"""The search for the highest load that meets an SLO: grow the load until a trial fails, then narrow the bracket.

A trial passes when the share of its requests that meet every SLO is at least the target. Near the boundary a
share can fall either side by chance: a trial whose share lies within two standard errors of the target
(sqrt(p(1-p)/n)) is repeated, and the load is judged on all its trials' requests together. The search answers
only "which load next"; running the trials is someone else's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GROW = 2.0  # each step up (or down) multiplies the load by this until the verdict flips
MAX_STEPS_DOWN = 6  # a start that fails is halved at most this often before the SLO is declared out of reach
REPEATS = 2  # a load whose result is too close to call is tried at most this many more times


@dataclass
class Tally:
    met: int = 0
    requests: int = 0
    trials: int = 0
    invalid: bool = False  # a trial cannot pass: it ended saturated, or held its sends back (store/schema.py)

    @property
    def share(self) -> float:
        return self.met / self.requests if self.requests else 0.0

    def close(self, target: float) -> bool:
        """Too close to call: the target lies within two standard errors of the share."""
        if self.invalid or not self.requests:
            return False
        p = min(max(self.share, 1e-9), 1 - 1e-9)
        return abs(self.share - target) <= 2 * math.sqrt(p * (1 - p) / self.requests)

    def passed(self, target: float) -> bool:
        return not self.invalid and self.requests > 0 and self.share >= target


@dataclass
class Search:
    start: float
    target: float  # the share of requests that must meet every SLO
    integer: bool = False  # concurrency: whole users
    precision: float = 0.05  # stop once the failing load is within this fraction above the passing one
    max_trials: int = 16
    tallies: dict[float, Tally] = field(default_factory=dict)
    trials: int = 0

    def record(self, load: float, met: int, requests: int, invalid: bool = False) -> None:
        t = self.tallies.setdefault(load, Tally())
        t.met += met
        t.requests += requests
        t.trials += 1
        t.invalid = t.invalid or invalid
        self.trials += 1

    def _judged(self) -> tuple[list[float], list[float]]:
        """Loads that passed and loads that failed; a load whose trials measured nothing is neither."""
        passing = [x for x, t in self.tallies.items() if t.passed(self.target)]
        failing = [x for x, t in self.tallies.items() if not t.passed(self.target) and t.requests]
        return passing, failing

    @property
    def unmeasured(self) -> list[float]:
        """Loads whose trials had no request outside warm-up (too short at that rate): they judge nothing."""
        return sorted(x for x, t in self.tallies.items() if not t.requests)

    @property
    def bracket(self) -> tuple[float | None, float | None]:
        """The highest load that passed below the lowest that failed (a failure below a pass is noise)."""
        passing, failing = self._judged()
        lo = max(passing, default=None)
        above = [x for x in failing if lo is None or x > lo]
        return lo, min(above, default=None)

    def _unsettled(self, loads: tuple[float | None, ...]) -> float | None:
        for x in loads:
            if x is not None and self.tallies[x].close(self.target) and self.tallies[x].trials <= REPEATS:
                return x
        return None

    def next_load(self) -> float | None:
        """The next trial's load, or None when the search is over."""
        if not self.tallies:
            return self._round(self.start)
        if self.trials >= self.max_trials or self.unmeasured:
            return None  # out of trials, or a trial too short to measure anything: lower loads measure less
        lo, hi = self.bracket
        again = self._unsettled((lo, hi))
        if again is not None:
            return again
        if lo is None:  # nothing passed yet: go down
            lowest = min(self.tallies)
            if lowest <= self._round(self.start / GROW**MAX_STEPS_DOWN) or (self.integer and lowest <= 1):
                return None
            return self._round(lowest / GROW)
        if hi is None:  # nothing failed above the best pass: go up
            return self._round(lo * GROW)
        if self._narrow_enough(lo, hi):
            return None
        mid = self._round(math.sqrt(lo * hi))
        return mid if lo < mid < hi else None

    def _narrow_enough(self, lo: float, hi: float) -> bool:
        return hi - lo <= 1 if self.integer else hi <= lo * (1 + self.precision)

    def _round(self, x: float) -> float:
        return float(max(1, round(x))) if self.integer else float(f"{x:.4g}")

    @property
    def verdict(self) -> str:
        """met (a bracket as narrow as asked, settled), not met (no load tried passed) or noisy (a boundary too
        close to call after repeats, or the trials ran out first)."""
        lo, hi = self.bracket
        if lo is None:
            return "not met"
        if hi is None or not self._narrow_enough(lo, hi):
            return "noisy"
        if any(x is not None and self.tallies[x].close(self.target) for x in (lo, hi)):
            return "noisy"
        return "met"
