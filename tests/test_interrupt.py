"""Ctrl-C and SIGTERM stop a run cleanly: new sends stop, in-flight requests get a grace period, all is kept."""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import INTERRUPTIBLE, SLOW_ENDPOINT, Forked, check_interrupted, streaming


@pytest.mark.slow
def test_signals_mark_the_run_interrupted_and_keep_what_was_measured(write, tmp_path):
    write("ep.yaml", SLOW_ENDPOINT)
    # Each request streams for about 10 s, longer than the 2 s grace period, so some are cut off in flight.
    w = write("w.yaml", INTERRUPTIBLE)
    # Side by side (each waits out the same grace period): Ctrl-C and SIGTERM to loadgen alone, and a terminal's
    # Ctrl-C, which signals loadgen's whole process group; the background emulator must outlive the grace period.
    cases = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "group": signal.SIGINT}
    runs = {
        case: Forked("run", str(w), "--db", str(tmp_path / f"{case}.duckdb"))  # its own process group
        for case in cases
    }
    began = {case: streaming(proc, 0) for case, proc in runs.items()}
    time.sleep(2)  # streams in flight in each
    for case, proc in runs.items():
        if case == "group":
            os.killpg(proc.pid, cases[case])
        else:
            proc.send_signal(cases[case])
    for case, proc in runs.items():
        out, err = proc.communicate(timeout=30)
        err = began[case] + err
        assert proc.returncode == 128 + cases[case], err
        assert "Traceback" not in err and "interrupted" in err
        assert "not sent" in out  # the summary says how many planned requests were never sent
        check_interrupted(tmp_path / f"{case}.duckdb")
