"""Collecting finished requests: live counters and listeners for the live view, and batched hand-off to a writer.

A database writer (DuckDB) runs on a real OS thread from gevent's hub threadpool: a database call made on a
greenlet would freeze every user until it returned. A worker's writer sends to its master over Locust's channel,
which belongs to the event loop, so it runs there (`threaded=False`), in small batches. A crash loses at most one
flush interval of results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import gevent
import gevent.event
import gevent.lock

from loadgen.metrics import Derived, derive
from loadgen.results import RequestResult
from loadgen.spec.workload import SloSpec

Writer = Callable[[Sequence[tuple[RequestResult, Derived]]], None]
FLUSH_INTERVAL_S = 0.5
# When the run's first N requests all fail with the same 4xx status, the endpoint refuses what this workload
# sends (a wrong model, path or body): the run stops as failed instead of sending the rest.
FAIL_FAST_REQUESTS = 5
UNSENT_BATCH = 50_000


def _refused(first: Sequence[RequestResult]) -> str | None:
    statuses = {(r.error, r.http_status) for r in first}
    if len(statuses) != 1 or first[0].error != "http_4xx":
        return None
    return (
        f"the first {len(first)} requests all failed with HTTP {first[0].http_status} "
        f"({(first[0].error_detail or '').strip()[:200]}): the run stopped instead of sending the rest"
    )


class Recorder:
    def __init__(self, writer: Writer, threaded: bool = True, flush_interval_s: float = FLUSH_INTERVAL_S):
        self.writer = writer
        self.threaded = threaded
        self.flush_interval_s = flush_interval_s
        self.buffer: list[tuple[RequestResult, Derived]] = []
        self.done = 0
        self.in_flight = 0
        # Requests x seconds in flight since the start: its change over an interval, divided by the interval, is
        # the mean number in flight then, which a sample taken now and then misses for short requests.
        self._in_flight_s = 0.0
        self._since = time.perf_counter()
        self._flusher: gevent.Greenlet | None = None
        self._stop = gevent.event.Event()
        self._one_writer = gevent.lock.Semaphore()
        self.write_error: BaseException | None = None
        self.refused: str | None = None  # why the run should stop: its first requests were all refused alike
        # See each request as it ends: the live view, the current stage's saturation check.
        self.listeners: list[Callable[[RequestResult, Derived], None]] = []
        self._first: list[RequestResult] = []

    def _count(self, change: int) -> None:
        now = time.perf_counter()
        self._in_flight_s += self.in_flight * (now - self._since)
        self._since = now
        self.in_flight += change

    def in_flight_s(self) -> float:
        """Requests x seconds in flight from the start until now."""
        return self._in_flight_s + self.in_flight * (time.perf_counter() - self._since)

    def sending(self) -> None:
        """A request goes out; `add` ends it (or `gave_up`, when it never went out after all)."""
        self._count(1)

    def gave_up(self) -> None:
        self._count(-1)

    def add(self, r: RequestResult, slo: SloSpec) -> Derived:
        """A request this process sent has ended: derive its metrics and queue it for the writer."""
        self._count(-1)
        return self.collect(r, slo)

    def collect(self, r: RequestResult, slo: SloSpec) -> Derived:
        """A request has ended (here, or on a worker that sent its row): derive its metrics, count it and queue it
        for the writer."""
        d = derive(r, slo)
        self.buffer.append((r, d))
        self.done += 1
        for listen in self.listeners:
            listen(r, d)
        if len(self._first) < FAIL_FAST_REQUESTS:
            self._first.append(r)
            if len(self._first) == FAIL_FAST_REQUESTS:
                self.refused = _refused(self._first)
        return d

    def add_unsent(self, r: RequestResult, slo: SloSpec) -> None:
        """A planned request never sent; written in batches, so that a long plan's rest never piles up here."""
        self.buffer.append((r, derive(r, slo)))
        if len(self.buffer) >= UNSENT_BATCH:
            self.flush()

    def _write(self, batch: Sequence[tuple[RequestResult, Derived]]) -> Exception | None:
        """Runs on the pool's thread; hands a failure back as a value (a raise there would be printed)."""
        try:
            self.writer(batch)
        except Exception as e:
            return e
        return None

    def flush(self) -> None:
        # One write at a time: the flusher and a caller between stages (a search's trials) may both flush, and the
        # writer's database connection is not to be used from two threads at once.
        with self._one_writer:
            batch, self.buffer = self.buffer, []
            if batch:
                pool = gevent.get_hub().threadpool
                error = pool.apply(self._write, (batch,)) if self.threaded else self._write(batch)
                if error is not None:
                    self.write_error = error

    def _loop(self) -> None:
        # After a failed write the flusher stops; the engine stops sending and reports it.
        while self.write_error is None and not self._stop.wait(self.flush_interval_s):
            self.flush()

    def start(self) -> None:
        self._flusher = gevent.spawn(self._loop)

    def stop(self) -> None:
        """Final flush, after any write in progress has finished (one writer at a time)."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        if self.write_error is None:
            self.flush()
