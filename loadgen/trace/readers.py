"""Reading traces as a stream of batches, never whole: CSV formats through DuckDB's reader (millions of rows a
second, errors with line and column), the JSONL formats (Mooncake, Bailian) line by line.

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
from loadgen.trace import dag
from loadgen.trace.follows import Follows

BATCH_ROWS = 65_536


@dataclass
class Batch:
    ts_ns: np.ndarray  # int64
    prompt: np.ndarray  # int64
    output: np.ndarray  # int64
    prefixes: list[tuple[int, ...]] | None = None  # JSONL formats: the hash id of each prompt block
    groups: list[int | None] | None = None  # Bailian: each request's conversation (its first turn's chat_id)
    chats: list[tuple[int, int, int]] | None = None  # Bailian: each request's (chat_id, parent_chat_id, turn)


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
    if spec.format in JSONL_FORMATS:
        rows = bad = 0
        for _, bad_here, n in _jsonl_lines(path, spec):
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
    """Check every stage's trace before a run (or in `validate`): a bad row is an input error, exit 2. A stage's
    agent-task graphs are read whole (they are small) and checked the same way."""
    for s in workload.stages:
        graphs = s.tasks.trace if s.tasks is not None else None
        if graphs is not None:
            dag.tasks(graphs.path, s.tasks.max_depth, s.tasks.max_calls, graphs.output_tokens)
    return {s.name: check(s.load.trace) for s in workload.stages if s.load.trace is not None}


def batches(spec: TraceSpec) -> Iterator[Batch]:
    """The kept rows, in file order, a batch at a time (the trace is never held whole)."""
    path = Path(spec.path)
    if spec.format in JSONL_FORMATS:
        yield from _jsonl_batches(path, spec)
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


# Each JSONL format's lengths, and its timestamp's unit in nanoseconds: Mooncake's milliseconds since the first
# request; Bailian's seconds (alibaba/qwen-bailian-usagetraces-anon, Apache-2.0, the ATC'25 KV-cache study).
JSONL_FORMATS = {"mooncake": 1_000_000, "bailian": 1_000_000_000}
LENGTH_KEYS = ("input_length", "output_length")
# Bailian's conversation keys: a request's id, its parent's (-1 for the first turn), its turn and its type.
BAILIAN_KEYS = {"chat_id": 0, "parent_chat_id": -1, "turn": 1}

# (timestamp ns, prompt, output, hash_ids, chat_id, parent_chat_id, turn); the last three None outside Bailian.
Row = tuple[int, int, int, tuple[int, ...], int | None, int | None, int | None]


def _jsonl_lines(path: Path, spec: TraceSpec) -> Iterator[tuple[list[Row], int, int]]:
    """(rows, bad rows skipped, row count) per block of lines; a bad line raises unless on_bad_rows is skip."""
    on_bad = spec.on_bad_rows
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
                row = _jsonl_row(line, spec.format)
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


def _number(obj: dict, key: str) -> int | float:
    v = obj.get(key)
    if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
        raise ValueError(f"column {key}: expected a non-negative number, got {v!r}")
    return v


def _jsonl_row(line: bytes, fmt: str) -> Row:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    ts = _number(obj, "timestamp")
    prompt, output = (int(_number(obj, key)) for key in LENGTH_KEYS)
    if fmt == "bailian":
        for key, least in BAILIAN_KEYS.items():
            v = obj.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise ValueError(f"column {key}: expected an integer of at least {least}, got {v!r}")
    ids = obj.get("hash_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"column hash_ids: expected a list of integers, got {ids!r}")
    chat, parent, turn = (obj["chat_id"], obj["parent_chat_id"], obj["turn"]) if fmt == "bailian" else (None,) * 3
    return int(round(ts * JSONL_FORMATS[fmt])), prompt, output, tuple(ids), chat, parent, turn


def _conversations(rows: list[Row], roots: dict[int, int]) -> list[int | None]:
    """Each row's conversation: its first turn's chat_id, followed up the parents (`roots` carries what earlier
    rows said; a parent outside the file leaves the row its own conversation)."""
    groups: list[int | None] = []
    for *_, chat, parent, _turn in rows:
        if chat is None:
            groups.append(None)
            continue
        root = roots.get(parent, chat) if parent is not None and parent >= 0 else chat
        roots[chat] = root
        groups.append(root)
    return groups


def _jsonl_batches(path: Path, spec: TraceSpec) -> Iterator[Batch]:
    seen = 0
    roots: dict[int, int] = {}
    follows = Follows(spec.block) if spec.dependencies == "prefix" else None
    for rows, _, _ in _jsonl_lines(path, spec):
        if follows is not None:
            rows = [follows.row(r) for r in rows]
        groups = _conversations(rows, roots)
        lo = max(spec.start_row - seen, 0)
        hi = len(rows) if spec.end_row is None else min(spec.end_row - seen, len(rows))
        seen += len(rows)
        if lo >= hi:
            if spec.end_row is not None and seen >= spec.end_row:
                return
            continue
        part = rows[lo:hi]
        ts, prompt, output, prefixes, chats, parents, turns = zip(*part, strict=True)
        chained = spec.conversational
        yield Batch(
            np.array(ts, np.int64),
            np.array(prompt, np.int64),
            np.array(output, np.int64),
            list(prefixes),
            groups[lo:hi] if chained else None,
            list(zip(chats, parents, turns, strict=True)) if chained else None,
        )
        if spec.end_row is not None and seen >= spec.end_row:
            return
