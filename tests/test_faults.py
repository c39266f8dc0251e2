"""A misbehaving endpoint: every planned request still ends up as one row with an honest status and class."""

from __future__ import annotations

import duckdb

from conftest import run_workload, with_faults

FAULTY = with_faults(
    "error_rate: 0.05, error_status: 503, rate_limit_rate: 0.05, drop_rate: 0.04,"
    " malformed_rate: 0.03, stall_rate: 0.03, stall_first_ms: 100, stall_between_ms: 50"
)


def test_mixed_faults_give_one_row_per_request_with_the_right_class(write, tmp_path):
    res, db = run_workload(
        write,
        tmp_path,
        FAULTY,
        "name: faults\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 32}\n"
        "requests: {prompt_tokens: 16, output_tokens: 8}\nstop: {requests: 500}\n",
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stdout + res.stderr and "errors by class" in res.stdout
    con = duckdb.connect(str(db), read_only=True)
    ids = [r[0] for r in con.execute("SELECT request_id FROM requests ORDER BY 1").fetchall()]
    assert ids == list(range(500))
    classes = dict(con.execute("SELECT error, count(*) FROM requests GROUP BY 1").fetchall())
    assert set(classes) == {None, "http_5xx", "http_429", "stream_broken", "malformed"}
    assert 60 < sum(v for k, v in classes.items() if k) < 140  # about 17% of 500 fail; stalls only slow down
    statuses = dict(con.execute("SELECT http_status, count(*) FROM requests GROUP BY 1").fetchall())
    assert statuses[503] == classes["http_5xx"] and statuses[429] == classes["http_429"]
    # Broken and malformed streams keep the events they delivered before failing.
    assert (
        con.execute(
            "SELECT count(*) FROM events JOIN requests USING (run_id, request_id) WHERE error = 'stream_broken'"
        ).fetchone()[0]
        > 0
    )
    stalled = con.execute("SELECT count(*) FROM requests WHERE status = 'ok' AND ttft_ms > 100").fetchone()[0]
    assert stalled > 0
    (errors,) = con.execute("SELECT errors FROM summary").fetchone()
    assert errors == sum(v for k, v in classes.items() if k)
