"""The live view's figures over time: per window of the run clock, from each request as it ends.

A request counts as it does in `summary` (ok, outside warm-up). Its TTFT falls in the window of its first token
(a reasoning model's answer TTFT, where it thought, in its answer's first token's), its TPOT in the window of its
last token, and its output tokens are spread over its streamed events, each
event's share in the window it arrived in (so a window's tokens/s grows as the requests streaming through it
end). Requests in flight are a mean over time: from the run's requests x seconds in flight, sampled as it goes,
the mean between two samples spread over the windows between them. Percentiles interpolate linearly between the
recorded values, as DuckDB's quantile_cont does for `summary`.

Windows are WINDOW_S wide; once a run has more than MAX_POINTS of them, each point of the series joins k
neighbours into one window of k * WINDOW_S, its figures computed from their recorded values (never by averaging
their percentiles), so a long run's chart stays at most MAX_POINTS wide.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loadgen.metrics import Derived
from loadgen.results import RequestResult

WINDOW_S = 1.0
MAX_POINTS = 900


def _pcts(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    p50, p99 = np.percentile(values, (50, 99))
    return float(p50), float(p99)


@dataclass
class _Window:
    ttft: list[float] = field(default_factory=list)
    answer_ttft: list[float] = field(default_factory=list)  # a reasoning model's, of requests that thought
    tpot: list[float] = field(default_factory=list)
    tokens: float = 0.0
    busy_s: float = 0.0  # requests x seconds in flight within the window, over the `spanned_s` sampled
    spanned_s: float = 0.0


class Windows:
    def __init__(self, width_s: float = WINDOW_S, max_points: int = MAX_POINTS):
        self.width_s = width_s
        self.max_points = max_points
        self._windows: defaultdict[int, _Window] = defaultdict(_Window)
        self._span: tuple[int, int] | None = None  # the first and last window with anything in it
        self._k = 1  # windows per point of the series
        self._figures: dict[int, dict[str, float | None]] = {}  # per point, until one of its windows changes
        self.stages: list[tuple[str, float]] = []  # each stage's name and when its clock started
        self._sampled: tuple[float, float] | None = None  # the latest sample: run clock, requests x seconds

    def _at(self, t_s: float) -> _Window:
        return self._changed(math.floor(t_s / self.width_s))

    def _changed(self, index: int) -> _Window:
        self._span = (index, index) if self._span is None else (min(self._span[0], index), max(self._span[1], index))
        self._figures.pop(index // self._k, None)
        return self._windows[index]

    def add(self, r: RequestResult, d: Derived) -> None:
        """A request has ended (a Recorder listener)."""
        if r.status != "ok" or r.warmup or not r.event_times:
            return
        if d.ttft_ms is not None:
            self._at(r.event_times[0]).ttft.append(d.ttft_ms)
        if r.reasoning_events and d.answer_ttft_ms is not None and r.answer_first_s is not None:
            self._at(r.answer_first_s).answer_ttft.append(d.answer_ttft_ms)
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

    def sample(self, t_s: float, in_flight_s: float, stage: str, stage_start_s: float | None) -> None:
        """The run's state now: its requests x seconds in flight so far, and the current stage (a new one marks
        a boundary)."""
        if self._sampled is None or t_s > self._sampled[0]:
            if self._sampled is not None:
                self._spread(*self._sampled, t_s, in_flight_s)
            self._sampled = (t_s, in_flight_s)
        if stage and stage_start_s is not None and (not self.stages or self.stages[-1] != (stage, stage_start_s)):
            self.stages.append((stage, stage_start_s))

    def _spread(self, t0: float, busy0: float, t1: float, busy1: float) -> None:
        """The mean in flight between two samples, over the windows between them."""
        mean = (busy1 - busy0) / (t1 - t0)
        for k in range(math.floor(t0 / self.width_s), math.floor(t1 / self.width_s) + 1):
            span = min(t1, (k + 1) * self.width_s) - max(t0, k * self.width_s)
            if span > 0:
                w = self._changed(k)
                w.busy_s += mean * span
                w.spanned_s += span

    def _point(self, p: int) -> dict[str, float | None]:
        """The figures of point p: windows p*k .. p*k + k - 1 as one."""
        if p not in self._figures:
            members = [w for i in range(p * self._k, (p + 1) * self._k) if (w := self._windows.get(i)) is not None]
            ttft = _pcts([v for w in members for v in w.ttft])
            answer_ttft = _pcts([v for w in members for v in w.answer_ttft])
            tpot = _pcts([v for w in members for v in w.tpot])
            spanned = sum(w.spanned_s for w in members)
            self._figures[p] = {
                "ttft_p50_ms": ttft[0],
                "ttft_p99_ms": ttft[1],
                "answer_ttft_p50_ms": answer_ttft[0],
                "answer_ttft_p99_ms": answer_ttft[1],
                "tpot_p50_ms": tpot[0],
                "tpot_p99_ms": tpot[1],
                "output_tokens_per_s": sum(w.tokens for w in members) / (self._k * self.width_s),
                "in_flight": sum(w.busy_s for w in members) / spanned if spanned else None,
            }
        return self._figures[p]

    def series(self) -> dict[str, Any]:
        """Each point from the first window with anything in it to the last: its start (`t_s`), its figures,
        and the width of its window (`width_s`)."""
        if self._span is None:
            return {"width_s": self.width_s, "t_s": []}
        first, last = self._span
        k = max(1, math.ceil((last - first + 1) / self.max_points))
        if k != self._k:
            self._k, self._figures = k, {}
        points = range(first // k, last // k + 1)
        rows = [self._point(p) for p in points]
        out: dict[str, Any] = {"width_s": k * self.width_s, "t_s": [p * k * self.width_s for p in points]}
        for key in rows[0]:
            out[key] = [row[key] for row in rows]
        return out
