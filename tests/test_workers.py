"""Scale-out on Locust's master and workers: one schedule split exactly, one timeline, one database, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import duckdb
import psutil
import pytest

from conftest import (
    FAST_ENDPOINT,
    INTERRUPTIBLE,
    SLOW_ENDPOINT,
    Forked,
    check_interrupted,
    loadgen,
    streaming,
)
from loadgen.schedule.plan import plan_stage
from loadgen.spec import load_workload

# Two stages: an open loop (Poisson) whose in-flight cap splits 3 users over 2 workers, then a closed loop.
TWO_STAGES = """\
name: split
endpoint: ep.yaml
seed: 11
requests:
  prompt_tokens: {dist: uniform, min: 20, max: 300}
  output_tokens: {dist: choice, values: [1, 4, 9]}
stages:
  - name: open
    load: {arrival: poisson, rate: 40, concurrency: 3}
    stop: {requests: 60}
  - name: closed
    load: {arrival: closed, concurrency: 4}
    stop: {requests: 30}
"""


def query(db, sql, *params):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_two_workers_send_the_single_process_plan_on_one_timeline(write, tmp_path):
    write("ep.yaml", FAST_ENDPOINT)
    w = write("w.yaml", TWO_STAGES)
    db = tmp_path / "r.duckdb"
    res = loadgen("run", str(w), "--db", str(db), "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "completed" in res.stderr
    assert query(db, "SELECT status FROM runs") == [("completed",)]

    # The union of what the workers sent is the single-process plan: IDs, lengths, and scheduled times that sit
    # at the planned offsets from one stage start.
    workload, _ = load_workload(str(w), [])
    first_id = 0
    for index, stage in enumerate(workload.stages):
        plan = list(plan_stage(stage, workload.seed, index, first_id=first_id))
        first_id = plan[-1].request_id + 1
        got = query(
            db,
            "SELECT request_id, prompt_tokens, max_tokens, scheduled_s, status, worker FROM requests "
            "WHERE stage = ? ORDER BY request_id",
            stage.name,
        )
        assert [(g[0], g[1], g[2]) for g in got] == [(p.request_id, p.prompt_tokens, p.output_tokens) for p in plan]
        assert {g[4] for g in got} == {"ok"} and {g[5] for g in got} == {0, 1}
        if stage.load.arrival == "poisson":
            starts = [g[3] - p.offset_s for g, p in zip(got, plan, strict=True)]
            assert max(starts) - min(starts) < 1e-9  # one start instant for every worker
            # Split in proportion to users: 3 users over 2 workers is 2 + 1, so 40 + 20 requests.
            assert sorted(
                n
                for _, n in query(db, f"SELECT worker, count(*) FROM requests WHERE stage = '{stage.name}' GROUP BY 1")
            ) == [20, 40]

    # Each worker's clock offset is stored with its uncertainty; on one machine the clocks are one clock, so the
    # estimate is within its own bound of zero, and the bound is well under a millisecond.
    workers = query(db, "SELECT worker, clock_offset_ms, clock_uncertainty_ms, status, users FROM workers ORDER BY 1")
    assert [(w_[0], w_[3]) for w_ in workers] == [(0, "finished"), (1, "finished")]
    for _, offset, uncertainty, _, _ in workers:
        assert abs(offset) <= uncertainty + 0.01 and uncertainty < 1.0
    assert sum(w_[4] for w_ in workers) == 4  # the closed loop's users, split
    # Events carry stamps on the master's timeline: inside each request's own window.
    bad = query(
        db,
        "SELECT count(*) FROM events e JOIN requests r USING (run_id, request_id) "
        "WHERE e.t_s < r.sent_s OR e.t_s > r.end_s",
    )
    assert bad == [(0,)]


def _workers_of(proc: subprocess.Popen, count: int, timeout_s: float = 30) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = [p for p in psutil.Process(proc.pid).children() if "worker" in p.cmdline()]
        if len(children) == count:
            return children
        time.sleep(0.1)
    raise AssertionError("the worker processes did not start")


def _run(w, db) -> Forked:
    return Forked("run", str(w), "--db", str(db), "--workers", "2")


@pytest.mark.slow
def test_a_killed_worker_loses_only_what_was_in_flight(write, tmp_path):
    write("ep.yaml", FAST_ENDPOINT)
    w = write(
        "w.yaml",
        "name: kill\nendpoint: ep.yaml\nload: {arrival: constant, rate: 20, concurrency: 8}\n"
        "requests: {prompt_tokens: 50, output_tokens: 20}\nstop: {requests: 100}\n",
    )  # 5 s of load
    db = tmp_path / "k.duckdb"
    proc = _run(w, db)
    victim = _workers_of(proc, 2)[1]
    began = streaming(proc, 1.5)  # both workers have sent for a while: 15 requests each
    victim.kill()
    out, err = proc.communicate(timeout=90)
    err = began + err
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "was lost" in err
    ((status, note),) = query(db, "SELECT status, note FROM runs")
    assert status == "completed" and "was lost" in note
    (lost,) = query(db, "SELECT worker FROM workers WHERE status = 'lost'")
    rows = dict(
        ((worker, error), n)
        for worker, error, n in query(db, "SELECT worker, coalesce(error, 'ok'), count(*) FROM requests GROUP BY 1, 2")
    )
    # Every planned request has a row; the lost worker's completed requests are kept, the rest of its share is
    # recorded as not sent because the worker was lost; the other worker's requests all completed.
    assert sum(rows.values()) == 100
    assert [r[0] for r in query(db, "SELECT request_id FROM requests ORDER BY 1")] == list(range(100))
    assert rows.get((lost[0], "ok"), 0) >= 5 and rows.get((lost[0], "worker_lost"), 0) >= 5
    assert rows[(1 - lost[0], "ok")] == 50
    assert query(db, "SELECT DISTINCT status FROM requests WHERE error = 'worker_lost'") == [("not_sent",)]


@pytest.mark.slow
def test_ctrl_c_on_the_master_stops_every_worker_and_keeps_everything(write, tmp_path):
    write("ep.yaml", SLOW_ENDPOINT)
    w = write("w.yaml", INTERRUPTIBLE)
    db = tmp_path / "i.duckdb"
    proc = _run(w, db)
    workers = _workers_of(proc, 2)
    began = streaming(proc, 3)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the master's process group
    out, err = proc.communicate(timeout=60)
    err = began + err
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "not sent" in out
    check_interrupted(db)
    assert query(db, "SELECT count(*) FROM workers WHERE status = 'finished'") == [(2,)]
    psutil.wait_procs(workers, timeout=15)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)


def test_api_key_reaches_workers_only_through_their_environment(write, tmp_path):
    key = "sk-canary-workers-51c2"
    write("ep.yaml", FAST_ENDPOINT + "api_key_env: LOADGEN_TEST_KEY\n")
    w = write("w.yaml", "name: key\nendpoint: ep.yaml\nrequests: {output_tokens: 3}\nstop: {requests: 6}\n")
    db = tmp_path / "key.duckdb"
    env = {**os.environ, "LOADGEN_TEST_KEY": key}
    res = loadgen("run", str(w), "--db", str(db), "--workers", "2", env=env)
    assert res.returncode == 0, res.stderr
    assert key not in res.stdout + res.stderr and key.encode() not in db.read_bytes()
    assert query(db, "SELECT count(*) FROM requests WHERE status = 'ok'") == [(6,)]


# Alone: beside other tests' load, its worker once exited 0 after connecting, before the master's run reached it
# (seen once in about a dozen suites on 2 cores, not yet understood).
@pytest.mark.exclusive
def test_a_worker_without_the_api_key_fails_with_one_line_before_sending(write, tmp_path):
    import socket

    write("ep.yaml", FAST_ENDPOINT + "api_key_env: LOADGEN_TEST_KEY\n")
    w = write("w.yaml", "name: nokey\nendpoint: ep.yaml\nstop: {requests: 6}\n")
    db = tmp_path / "nokey.duckdb"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    master = Forked(
        "master", str(w), "--db", str(db), "--expect-workers", "1", "--bind", f"127.0.0.1:{port}",
        env={**os.environ, "LOADGEN_TEST_KEY": "sk-master-only"},
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "LOADGEN_TEST_KEY"}
    worker = loadgen("worker", "--master", f"127.0.0.1:{port}", env=env, timeout=60)
    _, err = master.communicate(timeout=60)
    lines = [line for line in worker.stderr.strip().splitlines() if line.startswith("loadgen:")]
    assert worker.returncode == 2 and len(lines) == 1 and "LOADGEN_TEST_KEY is not set" in lines[0], worker.stderr
    assert master.returncode == 1 and "LOADGEN_TEST_KEY is not set" in err and "Traceback" not in err
    assert query(db, "SELECT status FROM runs") == [("failed",)]
    assert query(db, "SELECT count(*) FROM requests") == [(0,)]


@pytest.mark.parametrize("bad", ["nohost", "127.0.0.1:port", "127.0.0.1:70000"])
def test_worker_and_master_addresses_are_checked(write, bad):
    res = loadgen("worker", "--master", bad)
    assert res.returncode == 2 and "HOST:PORT" in res.stderr


@pytest.mark.slow
def test_a_worker_that_connects_after_the_start_takes_no_part(write, tmp_path):
    import socket

    write("ep.yaml", FAST_ENDPOINT)
    w = write(
        "w.yaml",
        "name: late\nendpoint: ep.yaml\nload: {arrival: constant, rate: 20, concurrency: 2}\n"
        "requests: {prompt_tokens: 32, output_tokens: 4}\nstop: {requests: 80}\n",
    )
    db = tmp_path / "late.duckdb"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        where = f"127.0.0.1:{s.getsockname()[1]}"
    master = Forked("master", str(w), "--db", str(db), "--expect-workers", "1", "--bind", where)
    first = Forked("worker", "--master", where)
    began = streaming(master, 1)  # the first worker has connected and the run started (its load lasts 4 s)
    late = loadgen("worker", "--master", where, timeout=60)
    _, err = master.communicate(timeout=90)
    err = began + err
    first.communicate(timeout=30)
    assert late.returncode == 1 and "had started before this worker connected" in late.stderr, late.stderr
    assert master.returncode == 0, err
    assert query(db, "SELECT count(*), count(DISTINCT request_id) FROM requests") == [(80, 80)]
    # Locust moved a user onto the newcomer and back: a request it had in hand may be cut short or never sent.
    statuses = dict(query(db, "SELECT status, count(*) FROM requests GROUP BY 1"))
    assert set(statuses) <= {"ok", "interrupted", "not_sent"} and statuses["ok"] >= 75, statuses
    assert query(db, "SELECT worker, status FROM workers") == [(0, "finished")]
