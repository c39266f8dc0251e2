"""How late loadgen's own event loop runs. If it is busy, stamps are late and latencies look inflated.

Every few milliseconds the probe yields once and measures how long the loop took to come back to it: the
time a streamed event that had just arrived would also have waited before being stamped. (A timer's own
lateness would mostly measure the poller's millisecond granularity, not load.)
"""

from __future__ import annotations

import time

import gevent
import numpy as np

PERIOD_S = 0.005


class DelayMonitor:
    def __init__(self) -> None:
        self.samples: list[float] = []
        self._g: gevent.Greenlet | None = None

    def _loop(self) -> None:
        while True:
            gevent.sleep(PERIOD_S)
            t = time.perf_counter()
            gevent.sleep(0)
            self.samples.append((time.perf_counter() - t) * 1000.0)

    def start(self) -> None:
        self._g = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._g is not None:
            self._g.kill()

    def p99_ms(self) -> float | None:
        return float(np.percentile(self.samples, 99)) if self.samples else None
