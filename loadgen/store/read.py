"""Opening a results database to read it: read-only, with the views as this loadgen defines them.

A database written by an older loadgen keeps its data and reads the same: the views are created anew as temporary
views over it. A database another process holds (a run or the web UI still writing it) is read from a snapshot
copy, as of its last checkpoint, and the reader is told so.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from loadgen.spec.errors import SpecError
from loadgen.store import schema


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
            for ddl in schema.VIEWS:
                con.execute(ddl.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW", 1))
            yield con
        finally:
            con.close()
