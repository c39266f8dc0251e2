"""The live view's figures over time: per window of the run clock, from each request as it ends.

A request counts as it does in `summary` (ok, outside warm-up). Its TTFT falls in the window of its first token,
its TPOT in the window of its last token, and its output tokens are spread over its streamed events, each
event's share in the window it arrived in (so a window's tokens/s grows as the requests streaming through it
end). Requests in flight are sampled as the run goes. Percentiles interpolate linearly between the recorded
values, as DuckDB's quantile_cont does for `summary`.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from loadgen.metrics import Derived
from loadgen.results import RequestResult

WINDOW_S = 1.0


def _pcts(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    p50, p99 = np.percentile(values, (50, 99))
    return float(p50), float(p99)


@dataclass
class _Window:
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    tokens: float = 0.0
    in_flight: list[int] = field(default_factory=list)
    figures: dict[str, float | None] | None = None  # computed once, again only after it changed


class Windows:
    def __init__(self, width_s: float = WINDOW_S):
        self.width_s = width_s
        self._windows: defaultdict[int, _Window] = defaultdict(_Window)
        self.stages: list[tuple[str, float]] = []  # each stage's name and when its clock started

    def _at(self, t_s: float) -> _Window:
        return self._changed(math.floor(t_s / self.width_s))

    def _changed(self, index: int) -> _Window:
        w = self._windows[index]
        w.figures = None
        return w

    def add(self, r: RequestResult, d: Derived) -> None:
        """A request has ended (a Recorder listener)."""
        if r.status != "ok" or r.warmup or not r.event_times:
            return
        if d.ttft_ms is not None:
            self._at(r.event_times[0]).ttft.append(d.ttft_ms)
        if d.tpot_ms is not None:
            self._at(r.event_times[-1]).tpot.append(d.tpot_ms)
        # Events come in time order: count each window's share at once, not event by event (this runs on the
        # event loop, for every request).
        times, share = r.event_times, r.output_tokens / len(r.event_times)
        lo = 0
        for k in range(math.floor(times[0] / self.width_s), math.floor(times[-1] / self.width_s) + 1):
            hi = bisect.bisect_left(times, (k + 1) * self.width_s, lo)
            if hi > lo:
                self._changed(k).tokens += (hi - lo) * share
            lo = hi

    def sample(self, t_s: float, in_flight: int, stage: str, stage_start_s: float | None) -> None:
        """The run's state now: requests in flight, and the current stage (a new one marks a boundary)."""
        self._at(t_s).in_flight.append(in_flight)
        if stage and stage_start_s is not None and (not self.stages or self.stages[-1] != (stage, stage_start_s)):
            self.stages.append((stage, stage_start_s))

    def _figures(self, w: _Window) -> dict[str, float | None]:
        if w.figures is None:
            ttft, tpot = _pcts(w.ttft), _pcts(w.tpot)
            w.figures = {
                "ttft_p50_ms": ttft and ttft[0],
                "ttft_p99_ms": ttft and ttft[1],
                "tpot_p50_ms": tpot and tpot[0],
                "tpot_p99_ms": tpot and tpot[1],
                "output_tokens_per_s": w.tokens / self.width_s,
                "in_flight": float(np.mean(w.in_flight)) if w.in_flight else None,
            }
        return w.figures

    def series(self) -> dict[str, list[float | None]]:
        """Each window from the first to the last with anything in it: its start (`t_s`) and its figures."""
        if not self._windows:
            return {"t_s": []}
        first, last = min(self._windows), max(self._windows)
        empty = _Window()
        rows = [self._figures(self._windows.get(i, empty)) for i in range(first, last + 1)]
        out: dict[str, list[float | None]] = {"t_s": [i * self.width_s for i in range(first, last + 1)]}
        for key in rows[0] if rows else ():
            out[key] = [row[key] for row in rows]
        return out
