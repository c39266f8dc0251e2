"""The live view's parts: figures over time from finished requests, and the terminal panel."""

from __future__ import annotations

import io
import re

import duckdb
import numpy as np
import pytest
from rich.console import Console

from conftest import FAST_ENDPOINT, loadgen
from loadgen.cli.panel import LivePanel
from loadgen.live.feed import LiveFeed
from loadgen.live.windows import Windows
from loadgen.metrics import derive
from loadgen.results import Progress, RequestResult
from loadgen.spec.workload import SloSpec


def request(i: int, sent: float, times: list[float], status: str = "ok", warmup: bool = False) -> RequestResult:
    return RequestResult(
        request_id=i,
        stage="main",
        scheduled_s=sent,
        sent_s=sent,
        prompt_tokens=10,
        max_tokens=len(times),
        warmup=warmup,
        end_s=times[-1] if times else sent + 0.1,
        status=status,
        event_times=times,
        event_tokens=[1] * len(times),
    )


def test_windows_place_each_figure_where_it_was_observed():
    w = Windows(width_s=1.0)
    ok = [
        request(0, 0.1, [0.3, 0.6, 1.2, 1.8]),  # first token in window 0, last in window 1
        request(1, 0.2, [0.7, 0.9]),
        request(2, 1.1, [1.5, 2.5, 3.5]),
    ]
    for r in ok:
        w.add(r, derive(r, SloSpec()))
    for r in (request(3, 0.0, [0.5, 0.6], status="error"), request(4, 0.0, [0.5, 0.6], warmup=True)):
        w.add(r, derive(r, SloSpec()))  # neither counts, as in `summary`
    # Requests x seconds in flight so far: 4 in flight from 0.5 to 0.9 s, then 1 until 2.5 s.
    w.sample(0.5, 1.0, "main", 0.0)
    w.sample(0.9, 2.6, "main", 0.0)
    w.sample(2.5, 4.2, "two", 2.0)
    s = w.series()
    assert s["t_s"] == [0.0, 1.0, 2.0, 3.0] and s["width_s"] == 1.0
    assert s["output_tokens_per_s"] == [4.0, 3.0, 1.0, 1.0]  # each token in the window it arrived in
    assert s["ttft_p50_ms"][0] == pytest.approx(np.percentile([200.0, 500.0], 50))
    assert s["ttft_p99_ms"][0] == pytest.approx(np.percentile([200.0, 500.0], 99))
    assert s["ttft_p50_ms"][1] == pytest.approx(400.0) and s["ttft_p50_ms"][2] is None
    assert s["tpot_p50_ms"] == [pytest.approx(200.0), pytest.approx(500.0), None, pytest.approx(1000.0)]
    # The mean over the time sampled in each window: window 0 saw 4 for 0.4 s and 1 for 0.1 s.
    assert s["in_flight"] == [pytest.approx(3.4), pytest.approx(1.0), pytest.approx(1.0), None]
    assert w.stages == [("main", 0.0), ("two", 2.0)]
    late = request(5, 0.0, [0.4, 3.9])  # a request that streamed through every window ends: they change
    w.add(late, derive(late, SloSpec()))
    assert w.series()["output_tokens_per_s"] == [5.0, 3.0, 1.0, 2.0]


def test_a_reasoning_models_answer_ttft_is_charted_where_its_answer_began():
    """A request that thought: its answer TTFT in the window of the answer's first event; one that did not think
    adds none (its answer TTFT is its TTFT, already charted)."""
    w = Windows(width_s=1.0)
    thought = request(0, 0.1, [0.3, 0.6, 1.4, 1.6])
    thought.reasoning_events = 2  # thinking at 0.3 and 0.6; the answer from 1.4
    plain = request(1, 0.2, [0.5, 0.7])
    for r in (thought, plain):
        w.add(r, derive(r, SloSpec()))
    s = w.series()
    assert s["answer_ttft_p50_ms"] == [None, pytest.approx(1300.0)]
    assert s["ttft_p50_ms"][0] == pytest.approx(np.percentile([200.0, 300.0], 50))


def test_a_long_run_joins_windows_computing_each_point_from_the_recorded_values():
    w = Windows(width_s=1.0, max_points=3)
    for i in range(7):  # windows 0..6: more than 3 points' worth, so points join 3 windows each
        r = request(i, i + 0.1, [i + 0.2, i + 0.2 + 0.01 * (i + 1)])
        w.add(r, derive(r, SloSpec()))
    s = w.series()
    assert s["width_s"] == 3.0 and s["t_s"] == [0.0, 3.0, 6.0]
    assert s["output_tokens_per_s"] == [2.0, 2.0, pytest.approx(2 / 3)]
    tpots = [10.0 * (i + 1) for i in range(7)]  # each request's one gap, in ms
    assert s["tpot_p50_ms"] == [pytest.approx(np.percentile(tpots[a:b], 50)) for a, b in ((0, 3), (3, 6), (6, 7))]
    assert s["tpot_p99_ms"][1] == pytest.approx(np.percentile(tpots[3:6], 99))  # not a mean of percentiles


def progress(stage: str = "main", done: int = 7) -> Progress:
    return Progress(planned=20, done=done, in_flight=3, stage=stage, elapsed_s=4.0, timing_bound_ms=0.3)


def feed_with_figures() -> LiveFeed:
    feed = LiveFeed(duckdb.connect(), "r")
    row = {f"{m}_p{q}_ms": v + q / 100 for m, v in (("ttft", 20), ("tpot", 10), ("itl", 9)) for q in (50, 90, 99)}
    row |= {
        "stage": "main",
        "requests": 8,
        "errors": 1,
        "not_sent": 2,
        "e2e_p50_ms": 345.6,
        "output_tokens_per_s": 812.3,
    }
    row |= {"requests_per_s": 6.5, "goodput_rps": 6.25, "lag_p99_ms": 1.25}
    feed.snapshot.stages = [row]
    feed.snapshot.errors = {"main": {"http_5xx": 1, "not_sent": 2}}
    return feed


def test_terminal_panel_shows_the_current_stage_figures():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    with LivePanel(feed_with_figures(), console, interactive=True) as panel:
        panel.update(progress(stage=""))  # before the load starts: nothing to show yet
        assert "done" not in out.getvalue()
        panel.update(progress())
        text = out.getvalue()
        panel.update(progress(stage="", done=20))  # after the last stage: still its figures
        assert "main: run 20/20 done" in out.getvalue()[len(text) :]
    assert "main: run 7/20 done, 3 in flight, 4 s" in text
    assert "TTFT p50/p90/p99 20.5 / 20.9 / 21.0 ms" in text and "TPOT 10.5 / 10.9 / 11.0 ms" in text
    assert "ITL 9.5 / 9.9 / 10.0 ms" in text and "E2E p50 345.6 ms" in text and "out tok/s 812.3" in text
    assert "goodput 6.2 req/s" in text and "lag p99 1.2 ms" in text and "timing bound 0.3 ms" in text
    assert "errors 1   not sent 2   by class: http_5xx 1, not_sent 2" in text
    assert "━" in text  # the progress bar


def test_the_panel_says_a_reasoning_models_answer_ttft_and_the_abandoned_requests_where_there_are():
    from loadgen.cli.panel import figures

    feed = feed_with_figures()
    plain = " ".join(figures(progress(), feed.snapshot, "main"))
    assert "answer TTFT" not in plain and "cancelled" not in plain
    feed.snapshot.stages[0] |= {"reasoning_share": 0.4, "answer_ttft_p50_ms": 812.5, "answer_ttft_p90_ms": 1500.0}
    feed.snapshot.stages[0] |= {"cancelled": 3}
    lines = " ".join(figures(progress(), feed.snapshot, "main"))
    assert "answer TTFT p50/p90 812.5/1,500.0 ms   thinking 40% of output tokens" in lines
    assert "not sent 2   cancelled 3" in lines


def test_without_a_terminal_the_panel_prints_plain_lines_now_and_then():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    with LivePanel(feed_with_figures(), console, interactive=False) as panel:  # stdout piped, stderr a terminal
        panel.update(progress())
        panel.update(progress(done=8))  # within PLAIN_EVERY_S of the last line: nothing
        panel.update(progress(stage="two", done=9))  # a new stage: a line at once
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in out.getvalue()
    assert lines[0].startswith("main: run 7/20 done, 3 in flight, 4 s | TTFT p50/p90/p99 20.5 / 20.9 / 21.0 ms")
    assert lines[1].startswith("two: run 9/20 done")


def test_a_run_without_a_terminal_logs_plain_lines_of_the_current_stage(write, tmp_path):
    write("ep.yaml", FAST_ENDPOINT)
    w = write(
        "w.yaml",
        "name: plain\nendpoint: ep.yaml\nload: {arrival: constant, rate: 10}\n"
        "requests: {prompt_tokens: 32, output_tokens: 8}\nstop: {requests: 25}\n",
    )
    res = loadgen("run", str(w), "--db", str(tmp_path / "r.duckdb"))
    assert res.returncode == 0, res.stderr
    lines = re.findall(r"^main: run \d+/25 done, \d+ in flight, \d+ s \| TTFT p50/p90/p99 .*$", res.stderr, re.M)
    assert lines and "\x1b[" not in res.stderr, res.stderr  # lines for a log, no escape codes
