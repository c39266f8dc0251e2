"""Ctrl-C and SIGTERM stop a run cleanly: new sends stop, in-flight requests get a grace period, all is kept."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import duckdb

from conftest import ROOT

SLOW_ENDPOINT = """
name: slow-emu
emulate: {engine: gpu, hardware: h100-sxm, hardware_overrides: {overhead_ms: 10}}
"""


def test_signals_mark_the_run_interrupted_and_keep_what_was_measured(write, tmp_path):
    write("ep.yaml", SLOW_ENDPOINT)
    # Each request streams for about 10 s, longer than the 5 s grace period, so some are cut off in flight.
    w = write(
        "w.yaml",
        "name: int\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 3}\n"
        "requests: {prompt_tokens: 16, output_tokens: {dist: choice, values: [2, 1000]}}\n"
        "stop: {requests: 100}\n",
    )
    # Ctrl-C and SIGTERM, each to a run of its own, side by side (each waits out the same grace period).
    runs = {
        signum: subprocess.Popen(
            [sys.executable, "-m", "loadgen", "run", str(w), "--db", str(tmp_path / f"int{signum}.duckdb")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    time.sleep(4)
    for signum, proc in runs.items():
        proc.send_signal(signum)
    for signum, proc in runs.items():
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + signum, err
        assert "Traceback" not in err and "interrupted" in err
        _check_interrupted(tmp_path / f"int{signum}.duckdb")


def _check_interrupted(db) -> None:
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status, finished_at IS NOT NULL FROM runs").fetchall() == [("interrupted", True)]
    statuses = dict(con.execute("SELECT status, count(*) FROM requests GROUP BY 1").fetchall())
    assert statuses.get("interrupted", 0) >= 1 and statuses.get("ok", 0) >= 1
    assert set(statuses) <= {"ok", "interrupted"}
    # A request cut off in flight keeps the tokens it had received.
    partial = con.execute(
        "SELECT r.output_tokens, count(e.idx) FROM requests r JOIN events e USING (run_id, request_id) "
        "WHERE r.status = 'interrupted' GROUP BY r.request_id, r.output_tokens"
    ).fetchall()
    assert partial and all(n == events and 0 < n < 1000 for n, events in partial)
