"""Telling that a stage is saturated: requests arrive faster than they finish, so every later one waits longer.

The sign is the wait from a request's scheduled time to its first token (ttft_sched: the server's queue and any
send held back). Over the requests whose first token came in the last `window_s` seconds, a least-squares line of
that wait against the time its first token came must rise by at least a tenth of a second per second (arrivals
at least 10% above what is served), and by 0.1 s at least. A stable server at high load has waits that come and
go; an overloaded one has a queue that only grows. Needs 20 requests over half the window at least. The stage then
sends no more; what is in flight finishes (within the workload's timeouts), and the next stage follows.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from loadgen.metrics import Derived
from loadgen.results import RequestResult

MIN_REQUESTS = 20
MIN_SLOPE = 0.1  # seconds of extra wait per second of schedule
MIN_RISE_S = 0.1
CHECK_EVERY_S = 0.5  # the stage walker asks every tick of the load's loop; the fit runs this often at most


class Saturation:
    def __init__(self, window_s: float):
        self.window_s = window_s
        self.points: deque[tuple[float, float]] = deque()  # (first token, wait for it), run clock, seconds
        self.next_check_s = 0.0

    def add(self, r: RequestResult, d: Derived) -> None:
        if r.first_token_s is not None and d.ttft_sched_ms is not None:
            self.points.append((r.first_token_s, d.ttft_sched_ms / 1000.0))

    def check(self, now_s: float) -> str | None:
        """Why the stage is saturated, or None (also between checks)."""
        if now_s < self.next_check_s:
            return None
        self.next_check_s = now_s + CHECK_EVERY_S
        while self.points and self.points[0][0] < now_s - self.window_s:
            self.points.popleft()
        if len(self.points) < MIN_REQUESTS:
            return None
        t, w = np.array(sorted(self.points)).T
        if np.ptp(t) < self.window_s / 2:  # a trend needs time: half the window at least
            return None
        slope, intercept = np.polyfit(t, w, 1)
        first, last = intercept + slope * t.min(), intercept + slope * t.max()
        if slope >= MIN_SLOPE and last - first >= MIN_RISE_S:
            return (
                f"saturated at {now_s:.1f} s: the wait from schedule to first token rose from {first:.2f} s to "
                f"{last:.2f} s over {np.ptp(t):.1f} s ({slope:.2f} s a second)"
            )
        return None
