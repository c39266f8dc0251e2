"""Writing runs, requests and events into DuckDB. Synchronous: the engine calls it off the load's event loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson

from loadgen.metrics import Derived, itl_ms
from loadgen.results import RequestResult, WorkerReport
from loadgen.server_metrics.names import NAMES
from loadgen.spec.workload import StageSpec
from loadgen.store import schema


class StoreError(Exception):
    """The database cannot be opened or written (held by another process, unwritable path, full disk)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


# A requests row is the column's namesake: a derived metric (metrics.Derived), else the result's field or property.
_DERIVED = {f.name for f in dataclasses.fields(Derived)}
_UNFILLED = [n for n, _ in schema.REQUEST_COLUMNS[1:] if n not in _DERIVED and not hasattr(RequestResult, n)]
assert not _UNFILLED, f"requests columns with no RequestResult or Derived namesake: {_UNFILLED}"


_LISTS = {name for name, kind in schema.REQUEST_COLUMNS if kind.endswith("[]")}


def _listed(values: list[Any]) -> np.ndarray:
    """A list column's values as a 1-d array of lists (np.array would make equal-length lists a second
    dimension)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """The columns `table` has in the connection's database."""
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
        "AND table_schema = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    return {name for (name,) in rows}


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(str(self.path))
            for ddl in schema.TABLES:
                self.con.execute(ddl)
            for table in schema.COLUMNS:  # a database an older loadgen wrote gains the columns added since
                for name, kind in schema.added_columns(table, _columns(self.con, table)):
                    self.con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            for ddl in schema.VIEWS:
                self.con.execute(ddl)
            self.con.execute("DELETE FROM server_metric_names")  # this loadgen's names
            self.con.executemany("INSERT INTO server_metric_names VALUES (?, ?, ?, ?)", list(NAMES))
            # The server-metrics sampler writes from its own thread: through its own connection to the database.
            self._metrics_con = self.con.cursor()
        except (duckdb.Error, OSError) as e:
            raise StoreError(f"cannot open results database {self.path}: {str(e).splitlines()[0]}") from None

    def close(self) -> None:
        self._metrics_con.close()
        self.con.close()

    def write_server_metrics(self, run_id: str, samples: Sequence[tuple[float, str, str, float]]) -> None:
        """One scrape of the server's metrics (time, name, labels, value), from the sampler's thread."""
        if not samples:
            return
        t, name, labels, value = zip(*samples, strict=True)
        frame = {  # noqa: F841  (read by name: a replacement scan)
            "t_s": np.array(t, dtype=np.float64),
            "name": np.array(name, dtype=object),
            "labels": np.array(labels, dtype=object),
            "value": np.array(value, dtype=np.float64),
        }
        self._metrics_con.execute("INSERT INTO server_metrics SELECT ?, * FROM frame", [run_id])

    def begin_run(
        self, run_id: str, workload: str, endpoint: str, spec: dict[str, Any], stages: Sequence[StageSpec]
    ) -> None:
        self.con.execute("BEGIN")
        self.con.execute(
            "INSERT INTO runs (run_id, workload, endpoint, started_at, status, spec) VALUES (?, ?, ?, ?, ?, ?)",
            [run_id, workload, endpoint, _now(), "running", orjson.dumps(spec).decode()],
        )
        for i, st in enumerate(stages):
            self.add_stage(run_id, i, st)
        self.con.execute("COMMIT")

    def add_stage(self, run_id: str, index: int, st: StageSpec, con: duckdb.DuckDBPyConnection | None = None) -> None:
        """A stage of the run (a search adds its trials as it goes, through its own connection `con`)."""
        (con or self.con).execute(
            "INSERT INTO stages (run_id, stage, idx, phase, arrival, concurrency, rate, spec) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                st.name,
                index,
                st.phase,
                st.load.arrival,
                st.load.users,
                st.load.rate,
                orjson.dumps(st.model_dump(mode="json")).decode(),
            ],
        )

    def add_trial(
        self,
        run_id: str,
        stage: str,
        over: str,
        load: float,
        target: float,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> None:
        """A capacity search's trial: which stage ran which load, against which target."""
        (con or self.con).execute("INSERT INTO trials VALUES (?, ?, ?, ?, ?)", [run_id, stage, over, load, target])

    def end_stage(self, run_id: str, stage: str, note: str, con: duckdb.DuckDBPyConnection | None = None) -> None:
        """Why a stage ended before its plan did (saturation)."""
        (con or self.con).execute("UPDATE stages SET ended = ? WHERE run_id = ? AND stage = ?", [note, run_id, stage])

    def mark_started(self, run_id: str) -> None:
        """The run's load starts now (the web UI's Start), not when the run was set up."""
        self.con.execute("UPDATE runs SET started_at = ? WHERE run_id = ?", [_now(), run_id])

    def finish_run(self, run_id: str, status: str, client_delay_p99_ms: float | None, note: str | None) -> None:
        self.con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, client_delay_p99_ms = ?, note = ? WHERE run_id = ?",
            [status, _now(), client_delay_p99_ms, note, run_id],
        )

    def add_workers(self, run_id: str, workers: Sequence[WorkerReport]) -> None:
        for w in workers:
            self.con.execute(
                "INSERT INTO workers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    w.worker,
                    w.node,
                    w.users,
                    w.clock_offset_ms,
                    w.clock_uncertainty_ms,
                    w.client_delay_p99_ms,
                    w.status,
                    w.note,
                ],
            )

    def write(self, run_id: str, batch: Sequence[tuple[RequestResult, Derived]]) -> None:
        """Append finished requests and their events in one transaction."""
        if not batch:
            return
        cols: dict[str, list[Any]] = {name: [] for name, _ in schema.REQUEST_COLUMNS[1:]}
        ev_req: list[int] = []
        ev_idx: list[int] = []
        ev_t: list[float] = []
        ev_tok: list[int] = []
        ev_phase: list[str] = []
        for r, d in batch:
            for name, values in cols.items():
                values.append(getattr(d if name in _DERIVED else r, name))
            n = len(r.event_times)
            ev_req.extend([r.request_id] * n)
            ev_idx.extend(range(n))
            ev_t.extend(r.event_times)
            ev_tok.extend(r.event_tokens)
            ev_phase.extend(["reasoning"] * r.reasoning_events + ["answer"] * (n - r.reasoning_events))
        req_frame = {  # noqa: F841
            name: _listed(values) if name in _LISTS else np.array(values, dtype=object) for name, values in cols.items()
        }
        ev_frame = {  # noqa: F841
            "request_id": np.array(ev_req, dtype=np.int64),
            "idx": np.array(ev_idx, dtype=np.int32),
            "t_s": np.array(ev_t, dtype=np.float64),
            "tokens": np.array(ev_tok, dtype=np.int32),
            "phase": np.array(ev_phase, dtype=object),
        }
        ev_frame["itl_ms"] = itl_ms(ev_frame["t_s"], ev_frame["idx"])
        # DuckDB reads the local dicts of arrays above by name (a replacement scan), far faster than executemany.
        req_names = ", ".join(cols)
        try:
            self.con.execute("BEGIN")
            self.con.execute(f"INSERT INTO requests (run_id, {req_names}) SELECT ?, * FROM req_frame", [run_id])
            if ev_req:
                self.con.execute(
                    "INSERT INTO events (run_id, request_id, idx, t_s, tokens, itl_ms, phase) "
                    "SELECT ?, request_id, idx, t_s, tokens, CASE WHEN isnan(itl_ms) THEN NULL ELSE itl_ms END, "
                    "phase FROM ev_frame",
                    [run_id],
                )
            self.con.execute("COMMIT")
        except duckdb.Error as e:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error:
                pass  # a failed COMMIT has rolled back already
            raise StoreError(f"cannot write results to {self.path}: {str(e).splitlines()[0]}") from None
