"""`loadgen run` end to end against the emulator: exit statuses, and a database that meets the contract."""

from __future__ import annotations

import csv
import io
import socket

import duckdb
import numpy as np
import orjson
import pytest

from conftest import FAST_ENDPOINT, loadgen, run_workload

WORKLOAD = """\
name: e2e
endpoint: ep.yaml
api: {api}
seed: 3
load: {load}
requests:
  prompt_tokens: {{dist: uniform, min: 20, max: 200}}
  output_tokens: {{dist: choice, values: [1, 5, 17]}}
stop: {{requests: {n}}}
slo: {{ttft_ms: 10000, tpot_ms: 1000}}
"""

CONTRACT_COLUMNS = {
    "runs": {
        "run_id": "VARCHAR",
        "workload": "VARCHAR",
        "endpoint": "VARCHAR",
        "started_at": "TIMESTAMP WITH TIME ZONE",
        "finished_at": "TIMESTAMP WITH TIME ZONE",
        "status": "VARCHAR",
        "spec": "JSON",
    },
    "requests": {
        "run_id": "VARCHAR",
        "request_id": "BIGINT",
        "stage": "VARCHAR",
        "scheduled_s": "DOUBLE",
        "sent_s": "DOUBLE",
        "first_token_s": "DOUBLE",
        "last_token_s": "DOUBLE",
        "end_s": "DOUBLE",
        "prompt_tokens": "INTEGER",
        "max_tokens": "INTEGER",
        "output_tokens": "INTEGER",
        "lag_ms": "DOUBLE",
        "ttft_ms": "DOUBLE",
        "tpot_ms": "DOUBLE",
        "e2e_ms": "DOUBLE",
        "status": "VARCHAR",
        "error": "VARCHAR",
        "http_status": "INTEGER",
    },
    "events": {
        "run_id": "VARCHAR",
        "request_id": "BIGINT",
        "idx": "INTEGER",
        "t_s": "DOUBLE",
        "tokens": "INTEGER",
        "itl_ms": "DOUBLE",
    },
}
SUMMARY_COLUMNS = [
    "run_id",
    "stage",
    "requests",
    "errors",
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "tpot_p90_ms",
    "tpot_p99_ms",
    "itl_p50_ms",
    "itl_p90_ms",
    "itl_p99_ms",
    "e2e_p50_ms",
    "output_tokens_per_s",
    "requests_per_s",
    "goodput_rps",
]


def rows(db, sql, *params):
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(sql, list(params))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


@pytest.fixture
def setup(write, tmp_path):
    def _setup(api="chat", load="{arrival: closed, concurrency: 4}", n=24, extra="", endpoint=FAST_ENDPOINT):
        write("ep.yaml", endpoint)
        w = write("w.yaml", WORKLOAD.format(api=api, load=load, n=n) + extra)
        return w, tmp_path / "out" / "r.duckdb"

    return _setup


@pytest.mark.exclusive  # token times: a client slowed by other tests reads a stream's events in one go
@pytest.mark.parametrize("api", ["chat", "completions"])
def test_run_lands_every_request_and_event_per_the_contract(setup, api):
    w, db = setup(api=api)
    res = loadgen("run", str(w), "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert "TTFT p50" in res.stdout and "goodput" in res.stdout
    assert "answer TTFT" not in res.stdout and "thinking" not in res.stdout  # no reasoning model here

    for table, cols in CONTRACT_COLUMNS.items():
        have = {r["column_name"]: r["column_type"] for r in rows(db, f"DESCRIBE {table}")}
        assert {k: have.get(k) for k in cols} == cols
    assert set(SUMMARY_COLUMNS) <= {r["column_name"] for r in rows(db, "DESCRIBE summary")}

    (run,) = rows(db, "SELECT * FROM runs")
    assert run["status"] == "completed" and run["workload"] == "e2e" and run["endpoint"] == "fast-emu"
    assert run["finished_at"] >= run["started_at"]
    assert orjson.loads(run["spec"])["workload"]["seed"] == 3

    reqs = rows(db, "SELECT * FROM requests ORDER BY request_id")
    gaps: list[float] = []  # inter-token latencies: every gap between a request's consecutive events
    assert [r["request_id"] for r in reqs] == list(range(24))
    assert {r["status"] for r in reqs} == {"ok"} and {r["http_status"] for r in reqs} == {200}
    assert {r["max_tokens"] for r in reqs} <= {1, 5, 17}
    for r in reqs:
        ev = rows(db, "SELECT * FROM events WHERE request_id = ? ORDER BY idx", r["request_id"])
        assert [e["idx"] for e in ev] == list(range(r["max_tokens"]))
        assert r["output_tokens"] == r["max_tokens"] == sum(e["tokens"] for e in ev)
        assert r["output_tokens_source"] == "usage" and r["server_prompt_tokens"] == r["prompt_tokens"]
        t = [e["t_s"] for e in ev]
        assert t == sorted(t) and r["first_token_s"] == t[0] and r["last_token_s"] == t[-1]
        assert ev[0]["itl_ms"] is None
        assert [e["itl_ms"] for e in ev[1:]] == pytest.approx(list(np.diff(t) * 1000))
        gaps += list(np.diff(t) * 1000)
        assert r["scheduled_s"] <= r["sent_s"] < r["first_token_s"] <= r["end_s"]
        assert r["ttft_ms"] == pytest.approx((r["first_token_s"] - r["sent_s"]) * 1000)
        assert r["e2e_ms"] == pytest.approx((r["end_s"] - r["sent_s"]) * 1000)
        assert r["lag_ms"] == pytest.approx((r["sent_s"] - r["scheduled_s"]) * 1000)
        if r["output_tokens"] < 2:
            assert r["tpot_ms"] is None
        else:
            tpot = (r["last_token_s"] - r["first_token_s"]) * 1000 / (r["output_tokens"] - 1)
            assert r["tpot_ms"] == pytest.approx(tpot)
            assert 0 < r["tpot_ms"] < 50

    (s,) = rows(db, "SELECT * FROM summary")
    assert (s["requests"], s["errors"], s["stage"]) == (24, 0, "main")
    ttft = np.array([r["ttft_ms"] for r in reqs])
    assert s["ttft_p50_ms"] == pytest.approx(np.percentile(ttft, 50))
    assert s["ttft_p99_ms"] == pytest.approx(np.percentile(ttft, 99))
    for q in (50, 90, 99):
        assert s[f"itl_p{q}_ms"] == pytest.approx(np.percentile(gaps, q))
    (whole,) = rows(db, "SELECT * FROM run_summary")  # one stage: the run's figures are the stage's
    assert whole == {k: v for k, v in s.items() if k != "stage"}
    span = max(r["end_s"] for r in reqs) - min(r["sent_s"] for r in reqs)
    assert s["output_tokens_per_s"] == pytest.approx(sum(r["output_tokens"] for r in reqs) / span)
    assert s["goodput_rps"] == pytest.approx(24 / span)


def test_closed_loop_keeps_exactly_its_users_busy(setup):
    w, db = setup(load="{arrival: closed, concurrency: 3}", n=30)
    assert loadgen("run", str(w), "--db", str(db)).returncode == 0
    reqs = rows(db, "SELECT sent_s, end_s FROM requests")
    marks = sorted([(r["sent_s"], 1) for r in reqs] + [(r["end_s"], -1) for r in reqs], key=lambda m: (m[0], m[1]))
    level = peak = 0
    for _, step in marks:
        level += step
        peak = max(peak, level)
    assert peak == 3


def test_open_loop_keeps_its_schedule_and_records_lag_when_the_cap_holds_sends(setup, write):
    slow = FAST_ENDPOINT.replace("overhead_ms: 0.2", "overhead_ms: 20")
    w, db = setup(load="{arrival: constant, rate: 50, concurrency: 1}", n=10, endpoint=slow)
    assert loadgen("run", str(w), "--db", str(db), "--set", "requests.output_tokens=10").returncode == 0
    reqs = rows(db, "SELECT * FROM requests ORDER BY request_id")
    assert np.allclose(np.diff([r["scheduled_s"] for r in reqs]), 0.02)  # the schedule is not shifted
    lags = [r["lag_ms"] for r in reqs]
    assert lags[-1] > 1000 and lags == sorted(lags)  # each send waited for the one before it
    for a, b in zip(reqs, reqs[1:], strict=False):
        assert b["sent_s"] >= a["end_s"]  # never more than one in flight
    (s,) = rows(db, "SELECT * FROM summary")
    assert s["lag_p99_ms"] > 1000 and s["ttft_sched_p50_ms"] > s["ttft_p50_ms"]


def test_stages_run_in_turn_into_one_run(setup):
    extra = "stages:\n  - {name: one, load: {concurrency: 1}, stop: {requests: 3}}\n  - {name: two}\n"
    w, db = setup(extra=extra, n=5)
    res = loadgen("run", str(w), "--db", str(db))
    assert res.returncode == 0, res.stderr
    reqs = rows(db, "SELECT stage, request_id, sent_s, end_s FROM requests ORDER BY request_id")
    assert [r["stage"] for r in reqs] == ["one"] * 3 + ["two"] * 5
    assert [r["request_id"] for r in reqs] == list(range(8))
    assert min(r["sent_s"] for r in reqs[3:]) >= max(r["end_s"] for r in reqs[:3])
    assert [r["stage"] for r in rows(db, "SELECT stage FROM summary ORDER BY start_s")] == ["one", "two"]


def test_invalid_workload_exits_2_naming_the_place_and_writes_nothing(setup, write):
    w, db = setup(n=2)
    assert loadgen("run", str(w), "--db", str(db)).returncode == 0
    before = rows(db, "SELECT count(*) AS n FROM requests")
    bad = write("w.yaml", w.read_text().replace("load: {arrival: closed,", "load: {arrival: poisson,"))
    res = loadgen("run", str(bad), "--db", str(db))
    assert res.returncode == 2
    assert f"{bad}:" in res.stderr and "rate" in res.stderr and "Traceback" not in res.stderr
    assert rows(db, "SELECT count(*) AS n FROM requests") == before
    assert len(rows(db, "SELECT * FROM runs")) == 1
    res = loadgen("run", str(w), "--db", str(db), "--set", "load.concurrency=zero")
    assert res.returncode == 2 and "load.concurrency" in res.stderr
    res = loadgen("run", str(w), "--bogus")
    assert res.returncode == 2 and "bogus" in res.stderr


def test_unreachable_endpoint_exits_1_with_one_line_and_no_database(setup, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    w, db = setup(n=2)
    res = loadgen("run", str(w), "--db", str(db), "--endpoint", f"http://127.0.0.1:{port}/v1")
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "cannot reach" in res.stderr
    assert not db.exists()


def test_a_second_run_adds_to_the_database_and_leaves_the_first_alone(setup):
    w, db = setup(n=3)
    assert loadgen("run", str(w), "--db", str(db)).returncode == 0
    first = rows(db, "SELECT * FROM requests ORDER BY request_id")
    assert loadgen("run", str(w), "--db", str(db)).returncode == 0
    runs = rows(db, "SELECT run_id FROM runs ORDER BY started_at")
    assert len(runs) == 2
    assert rows(db, "SELECT * FROM requests WHERE run_id = ? ORDER BY request_id", runs[0]["run_id"]) == first


def test_api_key_comes_from_the_environment_and_is_never_stored(setup, write):
    import os

    key = "sk-canary-7f3a9b"
    w, db = setup(n=2, endpoint=FAST_ENDPOINT + "api_key_env: LOADGEN_TEST_KEY\n")
    res = loadgen("run", str(w), "--db", str(db), env={**os.environ, "LOADGEN_TEST_KEY": key})
    assert res.returncode == 0, res.stderr
    assert key not in res.stdout + res.stderr
    assert key.encode() not in db.read_bytes()
    res = loadgen("run", str(w), "--db", str(db), env={k: v for k, v in os.environ.items() if k != "LOADGEN_TEST_KEY"})
    assert res.returncode == 2 and "LOADGEN_TEST_KEY" in res.stderr


def test_query_and_validate(setup):
    w, db = setup(n=2)
    res = loadgen("validate", str(w))
    assert res.returncode == 0 and "schedule preview" in res.stdout and "valid" in res.stdout
    assert not db.exists()
    assert loadgen("run", str(w), "--db", str(db)).returncode == 0
    res = loadgen("query", str(db), "SELECT count(*) AS n FROM requests")
    assert res.returncode == 0 and "2" in res.stdout
    res = loadgen("query", str(db), "SELECT nope FROM requests")
    assert res.returncode == 2 and "nope" in res.stderr
    # Piped (not a terminal, 80 columns): every value whole, times to the microsecond, in any format.
    sql = (
        "SELECT r.request_id, r.stage || '-with-a-long-stage-name' AS stage_name, e.t_s, r.ttft_ms, r.tpot_ms, "
        "r.e2e_ms, r.output_tokens_source, ru.run_id FROM events e JOIN requests r USING (run_id, request_id) "
        "JOIN runs ru USING (run_id) WHERE e.idx = 0 ORDER BY r.request_id"
    )
    res = loadgen("query", str(db), sql)
    con = duckdb.connect(str(db), read_only=True)
    (t_s, run_id) = con.execute("SELECT e.t_s, e.run_id FROM events e WHERE idx = 0 ORDER BY request_id").fetchone()
    con.close()
    assert res.returncode == 0 and "…" not in res.stdout
    assert (
        f"{t_s:.6f}".rstrip("0") in res.stdout and run_id in res.stdout and "main-with-a-long-stage-name" in res.stdout
    )
    csv_rows = list(csv.reader(io.StringIO(loadgen("query", str(db), sql, "--format", "csv").stdout)))
    assert csv_rows[0][:3] == ["request_id", "stage_name", "t_s"] and float(csv_rows[1][2]) == t_s
    records = orjson.loads(loadgen("query", str(db), sql, "--format", "json").stdout)
    assert len(records) == 2 and records[0]["t_s"] == t_s and records[0]["run_id"] == run_id


def test_a_closed_loop_after_an_open_loop_starts_when_the_open_loop_ends(write, tmp_path):
    """An open loop runs with its 256 users; the closed loop after it wants 2: the 254 others go at once, and the
    closed loop starts right after the open loop's last answer (it used to wait for the 30 s start timeout)."""
    res, db = run_workload(
        write,
        tmp_path,
        FAST_ENDPOINT,
        "name: open-then-closed\nendpoint: ep.yaml\napi: completions\nrequests: {prompt_tokens: 64, output_tokens: 8}\n"
        "stages:\n  - {name: open, load: {arrival: poisson, rate: 20}, stop: {requests: 10}}\n"
        "  - {name: closed, load: {arrival: closed, concurrency: 2}, stop: {requests: 4}}\n",
    )
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    (open_end, closed_start, closed_ok) = con.execute(
        "SELECT max(end_s) FILTER (WHERE stage = 'open'), min(sent_s) FILTER (WHERE stage = 'closed'), "
        "count(*) FILTER (WHERE stage = 'closed' AND status = 'ok') FROM requests"
    ).fetchone()
    assert closed_ok == 4 and 0 < closed_start - open_end < 3.0
