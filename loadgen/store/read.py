"""Opening a results database to read it: read-only, with the views as this loadgen defines them.

A database written by an older loadgen keeps its data and reads the same: the views are created anew as temporary
views over it. A database another process holds (a run or the web UI still writing it) is read from a snapshot
copy, as of its last checkpoint, and the reader is told so.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from loadgen.server_metrics.names import NAMES
from loadgen.spec.errors import SpecError
from loadgen.store import schema


def rows(cur: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
    """A query's rows, each a dict by column name."""
    cur.execute(sql, list(params))
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _held(e: duckdb.Error) -> bool:
    return "lock" in str(e).lower()


def _snapshot(path: Path, folder: Path) -> duckdb.DuckDBPyConnection:
    """A copy of the database and its write-ahead log (its latest commits); without the log (as of the last
    checkpoint) where a log caught mid-write cannot be replayed."""
    copy = folder / path.name
    shutil.copyfile(path, copy)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
        try:
            return duckdb.connect(str(copy), read_only=True)
        except duckdb.Error:
            copy.with_name(copy.name + ".wal").unlink()
            shutil.copyfile(path, copy)
    return duckdb.connect(str(copy), read_only=True)


def _upgrade(con: duckdb.DuckDBPyConnection) -> None:
    """A database an older loadgen wrote lacks newer columns and tables: temporary ones of the same names stand in
    (an absent column reads as its default, or NULL; an absent table as empty), so that the views bind."""
    (db,) = con.execute("SELECT current_database()").fetchone()
    have: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_catalog = ? AND table_schema = 'main'",
        [db],
    ).fetchall():
        have.setdefault(table, set()).add(column)
    for table in schema.COLUMNS:
        missing = schema.added_columns(table, have[table]) if table in have else []
        if missing:
            extra = ", ".join(f"{_default(kind)} AS {name}" for name, kind in missing)
            con.execute(f'CREATE TEMP VIEW {table} AS SELECT *, {extra} FROM "{db}".main.{table}')
    if "stages" in have and "ended" not in have["stages"]:
        con.execute(f'CREATE TEMP VIEW stages AS SELECT *, NULL::VARCHAR AS ended FROM "{db}".main.stages')
    for table, ddl in (
        ("workers", schema.WORKERS),
        ("server_metrics", schema.SERVER_METRICS),
        ("trials", schema.TRIALS),
    ):
        if table not in have:
            con.execute(_temp(ddl))
    # The names are this loadgen's, whichever wrote the database: the views map samples through them.
    con.execute(_temp(schema.SERVER_METRIC_NAMES))
    con.executemany("INSERT INTO temp.server_metric_names VALUES (?, ?, ?, ?)", list(NAMES))


def _temp(ddl: str) -> str:
    return ddl.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE", 1)


def _default(kind: str) -> str:
    """A column's default as SQL, from its declaration ("INTEGER DEFAULT 0" -> "0::INTEGER")."""
    words = kind.split()
    value = words[words.index("DEFAULT") + 1] if "DEFAULT" in words else "NULL"
    return f"{value}::{words[0]}"


@contextmanager
def reading(path: str | Path, said: Callable[[str], None] = lambda _: None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection with the current views; SpecError when there is no such database."""
    path = Path(path)
    if not path.exists():
        raise SpecError(str(path), "no such results database")
    with tempfile.TemporaryDirectory(prefix="loadgen-snapshot-") as tmp:
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as e:
            if not _held(e):
                raise
            said(
                f"{path} is held by another loadgen (a run or the web UI still writing it): reading a snapshot "
                "copy of what it had written; read again when it has finished for everything"
            )
            con = _snapshot(path, Path(tmp))
        try:
            _upgrade(con)
            for ddl in schema.VIEWS:
                con.execute(ddl.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW", 1))
            yield con
        finally:
            con.close()
