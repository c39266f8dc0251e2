"""The live view's data, for Locust's LLM tab and the terminal's panel: the run's rows of the `summary` and
`run_summary` views as the database holds them so far (one definition of every figure: the tab's figures at the
end are the database's), its errors by class, its progress, and its figures over time (windows.py).

Finished requests reach the database every half second (load/recorder.py), so the tables trail the run by that
much. The queries run on a thread with their own cursor, never on the event loop that stamps the stream, and
at most every REFRESH_S and never more than COST_SHARE of the time: a long run's summary costs more to read.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import duckdb
import gevent
import gevent.event

from loadgen.live.windows import Windows
from loadgen.results import Progress
from loadgen.store.read import rows

REFRESH_S = 1.0
COST_SHARE = 0.1
OVERALL = "all"  # the stage name the run's own row (view run_summary) goes by


@dataclass
class Snapshot:
    progress: Progress | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)  # summary rows, in start order
    overall: dict[str, Any] | None = None  # the run_summary row
    errors: dict[str, dict[str, int]] = field(default_factory=dict)  # stage (and OVERALL) -> error class -> count
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> its task_summary row (agent tasks)
    timing_bound_ms: float | None = None
    final: bool = False  # the run is over and stored: these are its figures

    def stage(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.stages if s["stage"] == name), None)


class LiveFeed:
    def __init__(self, con: duckdb.DuckDBPyConnection, run_id: str, tasks: bool = False):
        """`tasks`: the run has stages of agent tasks, whose figures the feed reads too."""
        self.run_id = run_id
        self.tasks = tasks
        self.windows = Windows()
        self.snapshot = Snapshot()
        self._cur = con.cursor()  # used by one thread at a time: the refresher's, or final() after it stopped
        self._stop = gevent.event.Event()
        self._g: gevent.Greenlet | None = None

    def update(self, p: Progress) -> None:
        """The run's progress (the load's on_progress): kept, and sampled for the figures over time."""
        self.snapshot.progress = p
        if p.timing_bound_ms is not None:
            self.snapshot.timing_bound_ms = p.timing_bound_ms
        self.windows.sample(p.elapsed_s, p.in_flight_s, p.stage, p.stage_start_s)

    def read(self, final: bool = False) -> Snapshot:
        """The stored figures, in one snapshot of the database (the stages' rows and the run's agree)."""
        self._cur.execute("BEGIN TRANSACTION")
        try:
            read = Snapshot(final=final)
            read.stages = rows(self._cur, "SELECT * FROM summary WHERE run_id = ? ORDER BY start_s", [self.run_id])
            overall = rows(self._cur, "SELECT * FROM run_summary WHERE run_id = ?", [self.run_id])
            read.overall = overall[0] if overall else None
            if self.tasks:  # agent tasks: their own view, only where the run has them (it costs more to read)
                tasks = rows(self._cur, "SELECT * FROM task_summary WHERE run_id = ?", [self.run_id])
                read.tasks = {r["stage"]: r for r in tasks}
            for e in rows(self._cur, "SELECT stage, error, requests FROM errors WHERE run_id = ?", [self.run_id]):
                for key in (e["stage"], OVERALL):
                    by_class = read.errors.setdefault(key, {})
                    by_class[e["error"]] = by_class.get(e["error"], 0) + e["requests"]
            if final:  # the run's own bound, as stored (with workers: theirs, which came with their last rows)
                (run,) = rows(self._cur, "SELECT client_delay_p99_ms FROM runs WHERE run_id = ?", [self.run_id])
                read.timing_bound_ms = run["client_delay_p99_ms"]
        finally:
            self._cur.execute("COMMIT")
        for row in (*read.stages, *overall):
            row.pop("run_id")
        return read

    def _refresh(self, final: bool = False) -> None:
        read: Snapshot = gevent.get_hub().threadpool.apply(self.read, (final,))
        s = self.snapshot
        s.stages, s.overall, s.errors, s.tasks, s.final = read.stages, read.overall, read.errors, read.tasks, final
        if final:
            s.timing_bound_ms = read.timing_bound_ms

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                self._refresh()
            except duckdb.Error:
                pass  # the run's own writer reports a database that fails; the live view waits for the next try
            cost = time.perf_counter() - began
            self._stop.wait(max(REFRESH_S - cost, cost / COST_SHARE - cost))

    def start(self) -> None:
        self._g = gevent.spawn(self._loop)

    def stop(self) -> None:
        self._stop.set()
        if self._g is not None:
            self._g.join()
            self._g = None

    def final(self) -> None:
        """The run is over and stored: read its figures once more, as the database has them for good (a
        database that cannot be read now leaves the live figures as they were, not final)."""
        self.stop()
        with contextlib.suppress(duckdb.Error):
            self._refresh(final=True)
