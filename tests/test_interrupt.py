"""Ctrl-C and SIGTERM stop a run cleanly: new sends stop, in-flight requests get a grace period, all is kept."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import duckdb

from conftest import COMMAND, ROOT

SLOW_ENDPOINT = """
name: slow-emu
emulate: {engine: gpu, hardware: h100-sxm, hardware_overrides: {overhead_ms: 10}}
"""


def test_signals_mark_the_run_interrupted_and_keep_what_was_measured(write, tmp_path):
    write("ep.yaml", SLOW_ENDPOINT)
    # Each request streams for about 10 s, longer than the 2 s grace period, so some are cut off in flight.
    w = write(
        "w.yaml",
        "name: int\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 3}\n"
        "requests: {prompt_tokens: 16, output_tokens: {dist: choice, values: [2, 1000]}}\n"
        "stop: {requests: 100}\ntimeouts: {grace_s: 2}\n",
    )
    # Side by side (each waits out the same grace period): Ctrl-C and SIGTERM to loadgen alone, and a terminal's
    # Ctrl-C, which signals loadgen's whole process group; the background emulator must outlive the grace period.
    cases = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "group": signal.SIGINT}
    runs = {
        case: subprocess.Popen(
            [*COMMAND, "run", str(w), "--db", str(tmp_path / f"{case}.duckdb")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,  # its own process group, as a shell gives a command
        )
        for case in cases
    }
    time.sleep(4)
    for case, proc in runs.items():
        if case == "group":
            os.killpg(proc.pid, cases[case])
        else:
            proc.send_signal(cases[case])
    for case, proc in runs.items():
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + cases[case], err
        assert "Traceback" not in err and "interrupted" in err
        assert "not sent" in out  # the summary says how many planned requests were never sent
        _check_interrupted(tmp_path / f"{case}.duckdb")


def _check_interrupted(db) -> None:
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status, finished_at IS NOT NULL FROM runs").fetchall() == [("interrupted", True)]
    statuses = dict(con.execute("SELECT status, count(*) FROM requests GROUP BY 1").fetchall())
    # Every planned request is one row: measured, cut off in flight, or never sent (never a broken stream).
    assert sum(statuses.values()) == 100 and set(statuses) <= {"ok", "interrupted", "not_sent"}, statuses
    assert statuses.get("interrupted", 0) >= 1 and statuses.get("ok", 0) >= 1 and statuses.get("not_sent", 0) >= 1
    ids = [r[0] for r in con.execute("SELECT request_id FROM requests ORDER BY 1").fetchall()]
    assert ids == list(range(100))
    row = con.execute("SELECT requests, not_sent, errors FROM summary").fetchone()
    assert row == (100, statuses["not_sent"], statuses["interrupted"])
    # A request cut off in flight keeps the tokens it had received.
    partial = con.execute(
        "SELECT r.output_tokens, count(e.idx) FROM requests r JOIN events e USING (run_id, request_id) "
        "WHERE r.status = 'interrupted' GROUP BY r.request_id, r.output_tokens"
    ).fetchall()
    assert partial and all(n == events and 0 < n < 1000 for n, events in partial)
