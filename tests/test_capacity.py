"""Capacity: the search for the highest load within an SLO, and stages that stop at saturation."""

from __future__ import annotations

import random

import duckdb
import pytest

from conftest import loadgen
from loadgen.capacity.search import Search
from loadgen.load.saturation import Saturation
from loadgen.metrics import Derived
from loadgen.results import RequestResult


def searched(capacity: float, start: float, integer: bool = False, n: int = 400, seed: int = 1) -> Search:
    """A search against a server whose share within the SLO falls linearly from 90% to 110% of `capacity`."""
    rnd = random.Random(seed)
    s = Search(start=start, target=0.95, integer=integer)
    while (x := s.next_load()) is not None:
        p = 1.0 if x < capacity * 0.9 else max(0.0, 1 - (x - capacity * 0.9) / (capacity * 0.2))
        s.record(x, sum(rnd.random() < p for _ in range(n)), n)
    return s


@pytest.mark.parametrize(("start", "integer"), [(4.0, False), (300.0, False), (4.0, True), (1.0, True)])
def test_the_search_brackets_the_load_where_the_share_crosses_the_target(start, integer):
    truth = 37 * 0.91  # where the share is 95%
    s = searched(37, start, integer)
    lo, hi = s.bracket
    assert lo is not None and hi is not None and lo < hi
    assert lo <= truth * 1.03 and hi >= truth * 0.97  # the bracket holds the truth, give or take noise
    assert (hi - lo <= 1) if integer else (hi <= lo * 1.05)
    assert s.verdict in ("met", "noisy") and s.trials <= 16


def test_a_close_call_is_repeated_and_judged_on_all_its_requests():
    s = Search(start=10, target=0.95)
    s.record(10.0, 190, 200)  # 95.0%: on the line
    assert s.next_load() == 10.0
    s.record(10.0, 170, 200)  # 85%: together 90%, a failure
    assert s.tallies[10.0].share == pytest.approx(0.9) and not s.tallies[10.0].passed(0.95)
    assert s.next_load() == 5.0


def test_nothing_passing_is_not_met_and_a_trial_held_back_cannot_pass():
    s = Search(start=8, target=0.9)
    while (x := s.next_load()) is not None:
        s.record(x, 0, 50)
    assert s.verdict == "not met" and s.bracket == (None, min(s.tallies)) and min(s.tallies) == 0.125
    held = Search(start=8, target=0.9)
    held.record(8.0, 50, 50, invalid=True)
    assert held.bracket == (None, 8.0) and held.next_load() == 4.0


def test_trials_running_out_leave_a_noisy_verdict():
    s = Search(start=1, target=0.9, max_trials=3)
    while (x := s.next_load()) is not None:
        s.record(x, 50, 50)
    assert s.trials == 3 and s.bracket == (4.0, None) and s.verdict == "noisy"


def _row(first: float, wait: float) -> tuple[RequestResult, Derived]:
    r = RequestResult(0, "s", first - wait, first - wait, 16, 8, end_s=first + 0.1, event_times=[first])
    return r, Derived(0.0, 10.0, wait * 1000, 5.0, 100.0, True)


def test_saturation_is_a_wait_that_keeps_growing_not_one_that_comes_and_goes():
    grows, steady = Saturation(5.0), Saturation(5.0)
    rnd = random.Random(2)
    for i in range(200):
        t = i * 0.05
        grows.add(*_row(t, 0.05 + 0.3 * t))
        steady.add(*_row(t, 0.05 + 0.2 * rnd.random()))  # a busy server: waits up to 0.25 s, no trend
    why = grows.check(10.0)
    assert why is not None and "0.30 s a second" in why
    assert steady.check(10.0) is None
    assert Saturation(5.0).check(1.0) is None  # nothing to judge


CHAT = (
    "name: cap\nendpoint: ep.yaml\napi: completions\nload: {arrival: closed, concurrency: 2}\n"
    "requests: {prompt_tokens: 512, output_tokens: 12}\nstop: {requests: 16}\nslo: {ttft_ms: 60}\n"
)
# Up to two sequences at once: a queue forms beyond, so TTFT grows with the users.
SMALL = (
    "name: {name}\nmodel: llama-2-7b\nprice: {{per_hour: {price}, currency: USD, source: a test}}\n"
    "emulate: {{engine: gpu, hardware: h100-sxm, serving: {{max_num_seqs: 2}},\n"
    "          hardware_overrides: {{overhead_ms: 0.2}}}}\n"
)


@pytest.mark.slow
def test_search_across_endpoints_gives_the_capacity_table(write, tmp_path):
    a = write("a.yaml", SMALL.format(name="small-a", price=2.0))
    b = write("b.yaml", SMALL.format(name="small-b", price=4.0).replace("max_num_seqs: 2", "max_num_seqs: 4"))
    w = write("w.yaml", CHAT.replace("ep.yaml", str(a)))
    db = tmp_path / "s.duckdb"
    r = loadgen("search", str(w), "--endpoints", str(a), str(b), "--db", str(db), "--max-trials", "6", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "capacity: the highest load" in r.stdout and "small-a" in r.stdout and "small-b" in r.stdout
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT DISTINCT phase FROM stages").fetchall() == [("search",)]
    trials = con.execute("SELECT run_id, count(*), min(load) FROM trials GROUP BY run_id").fetchall()
    assert len(trials) == 2 and all(1 <= n <= 6 and low >= 1 for _, n, low in trials)
    cap = {
        row[0]: row[1:]
        for row in con.execute(
            "SELECT endpoint, highest_passing, lowest_failing, output_tokens_per_s, price_per_hour, "
            "cost_per_million_output_tokens FROM capacity"
        ).fetchall()
    }
    assert set(cap) == {"small-a", "small-b"}
    for hi_pass, lo_fail, tok_s, price, cost in cap.values():
        assert hi_pass is not None and lo_fail is not None and lo_fail > hi_pass
        assert cost == pytest.approx(price / (tok_s * 3600) * 1e6)
    # A trial at the capacity meets the SLO for at least 95% of its requests; one at the lowest failing does not.
    for run_id, _, _ in trials:
        judged = dict(con.execute("SELECT load, passed FROM trial_loads WHERE run_id = ?", [run_id]).fetchall())
        assert all(judged[x] == (x <= max(k for k, v in judged.items() if v)) for x in judged)
    con.close()
    r = loadgen("report", str(db), "--out", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<h2>Capacity</h2>" in page and (tmp_path / "report" / "search_goodput.png").exists()


@pytest.mark.slow
def test_a_stage_that_saturates_ends_early_and_the_next_one_runs(write, tmp_path):
    write("ep.yaml", SMALL.format(name="small", price=1.0))
    w = write(
        "w.yaml",
        # At most 8 in flight (two slots serve them), so that what is in flight at saturation drains in a second.
        "name: sat\nendpoint: ep.yaml\napi: completions\nload: {arrival: poisson, rate: 40, concurrency: 8}\n"
        "requests: {prompt_tokens: 128, output_tokens: 40}\n"
        "stop: {requests: 3000, on_saturation: true, saturation_window_s: 3}\n"
        "stages:\n  - {name: over}\n  - {name: calm, load: {arrival: poisson, rate: 4}, stop: {requests: 15, "
        "on_saturation: true, saturation_window_s: 3}}\n",
    )
    db = tmp_path / "r.duckdb"
    r = loadgen("run", str(w), "--db", str(db), timeout=300)
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(db), read_only=True)
    ended = dict(con.execute("SELECT stage, ended FROM stages").fetchall())
    assert ended["over"].startswith("saturated at ") and ended["calm"] is None
    status, note = con.execute("SELECT status, note FROM runs").fetchone()
    assert status == "completed" and "stage over: saturated at" in note
    sent = con.execute("SELECT count(*) FROM requests WHERE stage = 'over' AND status = 'ok'").fetchone()[0]
    assert 20 <= sent < 1000
    assert con.execute("SELECT count(*) FROM requests WHERE stage = 'calm' AND status = 'ok'").fetchone() == (15,)


def test_a_trial_that_measured_nothing_ends_the_search_and_judges_nothing():
    s = Search(start=4, target=0.9)
    s.record(4.0, 10, 50)  # fails
    s.record(2.0, 0, 0)  # too short to measure anything outside warm-up
    assert s.next_load() is None and s.unmeasured == [2.0]
    assert s.bracket == (None, 4.0) and s.verdict == "not met"
