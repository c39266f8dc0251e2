"""Reading traces as a stream of batches, never whole: CSV formats through DuckDB's reader (millions of rows a
second, errors with line and column), Mooncake's JSONL line by line.

Every reader yields `Batch`es of the rows kept by the spec's filters and row range, in file order, with
timestamps as integer nanoseconds so that offsets between rows are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import orjson

from loadgen.spec.errors import SpecError
from loadgen.spec.workload import TraceSpec, WorkloadSpec

BATCH_ROWS = 65_536


@dataclass
class Batch:
    ts_ns: np.ndarray  # int64
    prompt: np.ndarray  # int64
    output: np.ndarray  # int64
    prefixes: list[tuple[int, ...]] | None = None  # Mooncake: the hash id of each 512-token prompt block


@dataclass
class Check:
    rows: int  # rows kept
    bad_rows: int  # rows skipped as malformed (on_bad_rows: skip)


# Columns each CSV format needs, with their types, and how its timestamp becomes nanoseconds.
CSV_COLUMNS = {
    "azure": {"TIMESTAMP": None, "ContextTokens": "BIGINT", "GeneratedTokens": "BIGINT"},
    "burstgpt": {
        "Timestamp": "DOUBLE",
        "Model": "VARCHAR",
        "Request tokens": "BIGINT",
        "Response tokens": "BIGINT",
        "Total tokens": "BIGINT",
        "Log Type": "VARCHAR",
    },
}


def _header(path: Path, fmt: str) -> tuple[list[str], str]:
    """Column names from the first line, and (Azure) the timestamp type that its first data row needs."""
    try:
        with path.open("r", encoding="utf-8", newline="") as f:
            header = f.readline().strip("\r\n")
            first = f.readline().strip("\r\n")
    except FileNotFoundError:
        raise SpecError(str(path), "trace file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(str(path), f"cannot read trace: {e}") from None
    names = [n.strip() for n in header.split(",")]
    missing = [c for c in CSV_COLUMNS[fmt] if c not in names]
    if missing:
        want = ",".join(CSV_COLUMNS[fmt])
        raise SpecError(str(path), f"a {fmt} trace needs the columns {want}; missing {', '.join(missing)}", line=1)
    # Azure 2023 timestamps have no zone and seven fractional digits; 2024's carry a zone (+00:00).
    stamp = first.split(",")[0].strip() if first else ""
    zoned = len(stamp) > 19 and (stamp[-6] in "+-" or stamp.endswith("Z"))
    return names, ("TIMESTAMPTZ" if zoned else "TIMESTAMP_NS")


def _csv_sql(spec: TraceSpec, path: Path) -> str:
    names, stamp_type = _header(path, spec.format)
    types = {**CSV_COLUMNS[spec.format], "TIMESTAMP": stamp_type}
    cols = ", ".join(f"'{n}': '{types.get(n) or 'VARCHAR'}'" for n in names)
    src = (
        f"read_csv('{_quote(path)}', header=true, auto_detect=false, delim=',', quote='\"', "
        f"columns={{{cols}}}, store_rejects=true)"
    )
    if spec.format == "azure":
        select = 'epoch_ns("TIMESTAMP") AS ts_ns, "ContextTokens" AS prompt, "GeneratedTokens" AS output'
        where = ["ts_ns IS NOT NULL", "prompt IS NOT NULL", "output IS NOT NULL"]
        return f"SELECT * FROM (SELECT {select} FROM {src}) WHERE {' AND '.join(where)}"
    select = (
        'CAST(round("Timestamp" * 1e9) AS BIGINT) AS ts_ns, "Request tokens" AS prompt, '
        '"Response tokens" AS output, "Model" AS model, "Log Type" AS log_type'
    )
    where = ["ts_ns IS NOT NULL", "prompt IS NOT NULL", "output IS NOT NULL"]
    if spec.models:
        where.append("model IN (" + ", ".join(f"'{_quote(m)}'" for m in spec.models) + ")")
    if spec.log_types:
        where.append("log_type IN (" + ", ".join(f"'{_quote(t)}'" for t in spec.log_types) + ")")
    if not spec.keep_failed:
        where.append("output > 0")
    return f"SELECT ts_ns, prompt, output FROM (SELECT {select} FROM {src}) WHERE {' AND '.join(where)}"


def _quote(value: object) -> str:
    return str(value).replace("'", "''")


def _ranged(sql: str, spec: TraceSpec) -> str:
    if spec.end_row is not None:
        return f"{sql} LIMIT {spec.end_row - spec.start_row} OFFSET {spec.start_row}"
    return f"{sql} OFFSET {spec.start_row}" if spec.start_row else sql


def _first_reject(con: duckdb.DuckDBPyConnection, path: Path) -> SpecError | None:
    row = con.execute("SELECT line, column_name, error_message FROM reject_errors ORDER BY line LIMIT 1").fetchone()
    if row is None:
        return None
    line, column, message = row
    return SpecError(str(path), f"column {column}: {message}", line=int(line))


def check(spec: TraceSpec) -> Check:
    """Read the whole trace once (before anything is sent): count its rows and find malformed ones."""
    path = Path(spec.path)
    if spec.format == "mooncake":
        rows = bad = 0
        for _, bad_here, n in _mooncake_lines(path, spec.on_bad_rows):
            rows += n
            bad += bad_here
        end = rows if spec.end_row is None else min(spec.end_row, rows)  # the row range, as the CSV readers apply it
        return Check(max(end - spec.start_row, 0), bad)
    con = duckdb.connect()
    try:
        # fetchall, not fetchone: DuckDB writes the rejected rows out only once the query has been read to the end.
        ((rows,),) = con.execute(f"SELECT count(*) FROM ({_ranged(_csv_sql(spec, path), spec)})").fetchall()
        (bad,) = con.execute("SELECT count(*) FROM reject_errors").fetchone()
        if bad and spec.on_bad_rows == "fail":
            err = _first_reject(con, path)
            assert err is not None
            raise err
    except duckdb.Error as e:
        raise SpecError(str(path), f"not a readable {spec.format} trace: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
    return Check(int(rows), int(bad))


def check_traces(workload: WorkloadSpec) -> dict[str, Check]:
    """Check every stage's trace before a run (or in `validate`): a bad row is an input error, exit 2."""
    return {s.name: check(s.load.trace) for s in workload.stages if s.load.trace is not None}


def batches(spec: TraceSpec) -> Iterator[Batch]:
    """The kept rows, in file order, a batch at a time (the trace is never held whole)."""
    path = Path(spec.path)
    if spec.format == "mooncake":
        yield from _mooncake_batches(path, spec)
        return
    con = duckdb.connect()
    try:
        reader = con.sql(_ranged(_csv_sql(spec, path), spec)).to_arrow_reader(BATCH_ROWS)
        for rb in reader:
            if rb.num_rows:
                cols = [rb.column(i).to_numpy(zero_copy_only=False).astype(np.int64, copy=False) for i in range(3)]
                yield Batch(*cols)
    except duckdb.Error as e:
        raise SpecError(str(path), f"not a readable {spec.format} trace: {str(e).splitlines()[0]}") from None
    finally:
        con.close()


MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")


def _mooncake_lines(path: Path, on_bad: str) -> Iterator[tuple[list[tuple[int, int, int, tuple[int, ...]]], int, int]]:
    """(rows, bad rows skipped, row count) per block of lines; a bad line raises unless on_bad is skip."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise SpecError(str(path), "trace file not found") from None
    with f:
        block: list[tuple[int, int, int, tuple[int, ...]]] = []
        bad = 0
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = _mooncake_row(line)
            except ValueError as e:
                if on_bad == "fail":
                    raise SpecError(str(path), str(e), line=lineno) from None
                bad += 1
                continue
            block.append(row)
            if len(block) >= BATCH_ROWS:
                yield block, bad, len(block)
                block, bad = [], 0
        if block or bad:
            yield block, bad, len(block)


def _mooncake_row(line: bytes) -> tuple[int, int, int, tuple[int, ...]]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    values = []
    for key in MOONCAKE_KEYS:
        v = obj.get(key)
        if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
            raise ValueError(f"column {key}: expected a non-negative number, got {v!r}")
        values.append(v)
    ids = obj.get("hash_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"column hash_ids: expected a list of integers, got {ids!r}")
    # Mooncake timestamps are milliseconds since the first request.
    return int(round(values[0] * 1_000_000)), int(values[1]), int(values[2]), tuple(ids)


def _mooncake_batches(path: Path, spec: TraceSpec) -> Iterator[Batch]:
    seen = 0
    for rows, _, _ in _mooncake_lines(path, spec.on_bad_rows):
        lo = max(spec.start_row - seen, 0)
        hi = len(rows) if spec.end_row is None else min(spec.end_row - seen, len(rows))
        seen += len(rows)
        if lo >= hi:
            if spec.end_row is not None and seen >= spec.end_row:
                return
            continue
        part = rows[lo:hi]
        ts, prompt, output, prefixes = zip(*part, strict=True)
        yield Batch(np.array(ts, np.int64), np.array(prompt, np.int64), np.array(output, np.int64), list(prefixes))
        if spec.end_row is not None and seen >= spec.end_row:
            return
