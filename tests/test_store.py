"""The store: what Store.write puts in the database, and the private library behaviour loadgen relies on, so that
an upgrade that changes it fails here, by name, rather than somewhere in a run."""

from __future__ import annotations

import asyncio
import socket

import duckdb
import pytest
from aiohttp import web
from geventhttpclient.response import HTTPSocketResponse

from loadgen.metrics import derive
from loadgen.results import RequestResult, not_sent
from loadgen.spec.workload import SloSpec, StageSpec
from loadgen.store import Store


def _stage() -> StageSpec:
    return StageSpec.model_validate(
        {
            "name": "s",
            "api": "chat",
            "model": None,
            "load": {"arrival": "closed"},
            "requests": {},
            "stop": {"requests": 2},
            "slo": {},
        }
    )


def _written(db, more: list[RequestResult] = ()) -> Store:
    """A store holding one finished run: an ok request (sent at 1.5 s, tokens at 2.0, 2.1 and 2.3 s), then `more`."""
    store = Store(db)
    store.begin_run("r", "w", "ep", {"workload": {}}, [_stage()])
    ok = RequestResult(
        request_id=0, stage="s", scheduled_s=1.0, sent_s=1.5, prompt_tokens=16, max_tokens=3, end_s=2.5,
        event_times=[2.0, 2.1, 2.3], event_tokens=[1, 1, 1], usage_completion_tokens=3,
    )  # fmt: skip
    slo = SloSpec(ttft_ms=1000)
    store.write("r", [(r, derive(r, slo)) for r in [ok, *more]])
    store.finish_run("r", "completed", 0.1, None)
    return store


def test_write_stores_each_request_and_its_events_with_the_derived_metrics(tmp_path):
    db = tmp_path / "w.duckdb"
    _written(db, [not_sent(1, "s", None, 16, 3, False)]).close()
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT request_id, status, lag_ms, ttft_ms, tpot_ms, e2e_ms, output_tokens, slo_ok FROM requests ORDER BY 1"
    ).fetchall()
    assert rows[0][:2] == (0, "ok") and rows[0][2:6] == pytest.approx((500.0, 500.0, 150.0, 1000.0))
    assert rows[0][6:] == (3, True)
    assert rows[1] == (1, "not_sent", None, None, None, None, 0, False)
    events = con.execute("SELECT request_id, idx, t_s, tokens FROM events ORDER BY idx").fetchall()
    assert events == [(0, 0, 2.0, 1), (0, 1, 2.1, 1), (0, 2, 2.3, 1)]


def test_a_database_from_an_older_loadgen_reads_with_the_current_views(tmp_path):
    from loadgen.store.read import reading

    db = tmp_path / "old.duckdb"
    store = _written(db)
    # As an older loadgen wrote it: without the columns and the table added since.
    for column in ("worker", "cached_tokens", "session", "turn", "parent_request_id", "server_prefill_ms"):
        store.con.execute(f"ALTER TABLE requests DROP COLUMN {column}")
    store.con.execute("ALTER TABLE events DROP COLUMN itl_ms")
    store.con.execute("DROP TABLE workers")
    store.close()
    with reading(db) as con:
        assert con.execute("SELECT requests, cached_share FROM summary").fetchall() == [(1, None)]
        got = con.execute("SELECT worker, cached_tokens, session, server_prefill_ms FROM requests").fetchall()
        assert got == [(0, None, None, None)]
        assert con.execute("SELECT itl_p50_ms FROM summary").fetchall() == [(None,)]
        assert con.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM workers").fetchone() == (0,)


def test_a_database_from_an_older_loadgen_gains_the_new_columns_when_written_again(tmp_path):
    """Opening an older database to write: the columns added since are added (old rows read NULL, or the
    default), and the new run's rows fill them."""
    db = tmp_path / "old.duckdb"
    store = _written(db)
    for column in ("worker", "cached_tokens", "server_prefill_ms", "server_decode_ms"):
        store.con.execute(f"ALTER TABLE requests DROP COLUMN {column}")
    store.con.execute("ALTER TABLE events DROP COLUMN itl_ms")
    store.close()
    store = Store(db)
    r = RequestResult(
        request_id=0, stage="s", scheduled_s=0.0, sent_s=0.0, prompt_tokens=16, max_tokens=2, end_s=0.5,
        event_times=[0.2, 0.3], event_tokens=[1, 1], cached_tokens=8, server_prefill_ms=150.0, server_decode_ms=90.0,
    )  # fmt: skip
    store.begin_run("r2", "w", "ep", {"workload": {}}, [_stage()])
    store.write("r2", [(r, derive(r, SloSpec()))])
    store.close()
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT run_id, worker, cached_tokens, server_prefill_ms, server_decode_ms FROM requests ORDER BY 1"
    ).fetchall()
    assert rows == [("r", 0, None, None, None), ("r2", 0, 8, 150.0, 90.0)]
    itl = con.execute("SELECT run_id, itl_ms FROM events WHERE idx = 1 ORDER BY 1").fetchall()
    assert itl == [("r", None), ("r2", pytest.approx(100.0))]


def test_geventhttpclient_keeps_its_parsed_body_buffer_and_socket_where_the_client_reads_them():
    a, b = socket.socketpair()
    try:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 10\r\n\r\nhello"
        resp = HTTPSocketResponse(a, block_size=1024, method="POST", pre_buffered=head)
        # client/http.py read_some(): the parsed body so far, and the socket while the body is incomplete
        assert bytes(resp._body_buffer) == b"hello" and resp._sock is a
    finally:
        a.close()
        b.close()


def test_aiohttp_site_exposes_its_listening_socket():
    async def port() -> int:
        runner = web.AppRunner(web.Application())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            return site._server.sockets[0].getsockname()[1]  # emulator/server.py serve()
        finally:
            await runner.cleanup()

    assert asyncio.run(port()) > 0
