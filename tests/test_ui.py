"""`loadgen ui`: Locust's web UI drives the same workload, counts each request once, and writes the same database."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone

import duckdb
import pytest

from conftest import FAST_ENDPOINT, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, data: bytes | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


@pytest.mark.parametrize("workers", [1, 2])
def test_web_ui_runs_the_workload_and_writes_the_database(write, tmp_path, workers):
    write("ep.yaml", FAST_ENDPOINT)
    w = write(
        "w.yaml",
        "name: ui\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 2}\n"
        "requests: {prompt_tokens: 32, output_tokens: 8}\nstop: {requests: 12}\n",
    )
    db, port = tmp_path / "ui.duckdb", free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "ui", str(w), "--db", str(db), "--web-port", str(port)]
        + ["--workers", str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get(base + "/")
                up = datetime.now(timezone.utc)  # the run was set up before this
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the web UI did not come up"
                time.sleep(0.1)
        # Locust's users and ramp-up fields, which the workload's stages decide, are hidden from the form ...
        assert re.search(r'"hide_common_options"\s*:\s*true', get(base + "/").decode())
        # ... and its host field cannot silently point the run elsewhere: loadgen refuses it, saying why.
        refused = json.loads(get(base + "/swarm", b"host=http%3A%2F%2Fexample.com"))
        assert refused["success"] is False and "--endpoint" in refused["message"]
        pressed = datetime.now(timezone.utc)
        get(base + "/swarm", b"")  # the Start button
        while True:
            stats = json.loads(get(base + "/stats/requests"))
            counts = {(s["method"], s["name"]): s["num_requests"] for s in stats["stats"]}
            # With workers, the master's figures are the workers' reports, sent every few seconds.
            if stats["state"] == "stopped" and counts.get(("POST", "/chat/completions")) == 12:
                break
            assert time.monotonic() < deadline, "the run did not finish"
            time.sleep(0.2)
        again = json.loads(get(base + "/swarm", b""))  # NEW, then Start, after the run: refused, never a no-op
        assert again["success"] is False and "results are in the database" in again["message"]
        # Locust's own figures count each request once: no TTFT/TPOT rows inflate its Aggregated row.
        rows = {(s["method"], s["name"]): s["num_requests"] for s in stats["stats"]}
        assert rows == {("POST", "/chat/completions"): 12, ("", "Aggregated"): 12}, rows
        assert stats["total_fail_per_sec"] == 0 and stats["fail_ratio"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "TTFT p50" in out
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchall() == [("completed",)]
    (started,) = con.execute("SELECT started_at FROM runs").fetchone()
    assert started >= up and abs((started - pressed).total_seconds()) < 1.0  # when Start was pressed, not set-up
    assert con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'ok') FROM requests").fetchone() == (12, 12)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (96,)
