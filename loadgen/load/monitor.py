"""How late loadgen's own event loop runs. If it is busy, stamps are late and latencies look inflated.

Every few milliseconds the probe yields once and measures how long the loop took to come back to it: the
time a streamed event that had just arrived would also have waited before being stamped. (A timer's own
lateness would mostly measure the poller's millisecond granularity, not load.)
"""

from __future__ import annotations

import time

import gevent

from loadgen.client.stamps import Delays

PERIOD_S = 0.005
# Above this p99 of its own scheduling delay, loadgen says its stamps (and so the latencies) may be inflated.
DELAY_WARN_MS = 1.0


class DelayMonitor:
    def __init__(self) -> None:
        self.delays = Delays()
        self._g: gevent.Greenlet | None = None

    def _loop(self) -> None:
        while True:
            gevent.sleep(PERIOD_S)
            t = time.perf_counter()
            gevent.sleep(0)
            self.delays.add(time.perf_counter() - t)

    def start(self) -> None:
        self._g = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._g is not None:
            self._g.kill()


def timing_bound(read_delays: Delays, monitor: DelayMonitor) -> tuple[float | None, str]:
    """Bound a process's own stamping error: with kernel stamps, how late reads came after their data arrived;
    otherwise how late the event loop ran. Returns the p99 in ms and what it measured."""
    kernel = read_delays.p99_ms()
    return (kernel, "read streamed data") if kernel is not None else (monitor.delays.p99_ms(), "ran")


def saturation_note(bound: float | None, how: str, who: str = "loadgen") -> str | None:
    if bound is None or bound <= DELAY_WARN_MS:
        return None
    return (
        f"{who} {how} {bound:.1f} ms late (p99), above its {DELAY_WARN_MS:.0f} ms bound: the client "
        "was saturated, and event times may be late by up to that much"
    )
