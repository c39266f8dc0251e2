"""`loadgen ui`: Locust's web UI drives the same workload, counts each request once, shows the LLM tab with the
database's own figures, and writes the same database."""

from __future__ import annotations

import html
import json
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from conftest import FAST_ENDPOINT, Forked, chromium
from loadgen.live.webtab import shown

TWO_STAGES = (
    "name: ui\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 2}\n"
    "requests: {prompt_tokens: 32, output_tokens: 16}\nslo: {ttft_ms: 10000}\n"
    "stages:\n  - {name: one, stop: {requests: 5}}\n  - {name: two, stop: {requests: 7}}\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, data: bytes | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


@dataclass
class UI:
    base: str
    db: Path
    proc: Forked
    up: datetime  # the run was set up before this
    deadline: float
    out: str = ""
    err: str = ""

    def json(self, path: str, data: bytes | None = None) -> dict:
        return json.loads(get(self.base + path, data))

    def final(self) -> dict:
        """The live view once it holds the run's stored figures."""
        while not (live := self.json("/loadgen/live"))["final"]:
            assert time.monotonic() < self.deadline, "the live view never got the stored figures"
            time.sleep(0.2)
        return live


@contextmanager
def web_ui(write, tmp_path: Path, workload: str, workers: int = 1) -> Iterator[UI]:
    """`loadgen ui` on the workload, up and waiting for Start; closed with Ctrl-C at the end."""
    write("ep.yaml", FAST_ENDPOINT)
    w = write("w.yaml", workload)
    db, port = tmp_path / "ui.duckdb", free_port()
    proc = Forked("ui", str(w), "--db", str(db), "--web-port", str(port), "--workers", str(workers))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                get(base + "/")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the web UI did not come up"
                time.sleep(0.1)
        ui = UI(base, db, proc, datetime.now(timezone.utc), deadline)
        yield ui
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    ui.out, ui.err = out, err


def stored(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, dict]:
    cur = con.execute(f"SELECT * FROM {view}")
    cols = [c[0] for c in cur.description]
    return {r.get("stage", "all"): r for r in (dict(zip(cols, v, strict=True)) for v in cur.fetchall())}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_web_ui_runs_the_workload_and_its_llm_tab_ends_on_the_summary(write, tmp_path, workers):
    with web_ui(write, tmp_path, TWO_STAGES, workers) as ui:
        # Locust's users and ramp-up fields, which the workload's stages decide, are hidden from the form ...
        assert re.search(r'"hide_common_options"\s*:\s*true', get(ui.base + "/").decode())
        # ... and its host field cannot silently point the run elsewhere: loadgen refuses it, saying why.
        refused = ui.json("/swarm", b"host=http%3A%2F%2Fexample.com")
        assert refused["success"] is False and "--endpoint" in refused["message"]
        pressed = datetime.now(timezone.utc)
        get(ui.base + "/swarm", b"")  # the Start button
        while True:
            stats = ui.json("/stats/requests")
            counts = {(s["method"], s["name"]): s["num_requests"] for s in stats["stats"]}
            # With workers, the master's figures are the workers' reports, sent every few seconds.
            if stats["state"] == "stopped" and counts.get(("POST", "/chat/completions")) == 12:
                break
            assert time.monotonic() < ui.deadline, "the run did not finish"
            time.sleep(0.2)
        again = ui.json("/swarm", b"")  # NEW, then Start, after the run: refused, never a no-op
        assert again["success"] is False and "results are in the database" in again["message"]
        # Locust's own figures count each request once: no TTFT/TPOT rows inflate its Aggregated row.
        assert counts == {("POST", "/chat/completions"): 12, ("", "Aggregated"): 12}, counts
        assert stats["total_fail_per_sec"] == 0 and stats["fail_ratio"] == 0
        # The LLM tab: its table rides on Locust's stats, its charts come from loadgen's own route.
        page = get(ui.base + "/").decode()
        assert '"extended_tabs": [{"key": "llm", "title": "LLM"}]' in page and "loadgen/llm.js" in page
        live = ui.final()
        tab = {r["stage"]: r for r in ui.json("/stats/requests")["extended_stats"][0]["data"]}
    assert ui.proc.returncode == 0, ui.err
    assert "TTFT p50" in ui.out
    con = duckdb.connect(str(ui.db), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchall() == [("completed",)]
    (started,) = con.execute("SELECT started_at FROM runs").fetchone()
    assert started >= ui.up and abs((started - pressed).total_seconds()) < 1.0  # when Start was pressed
    assert con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'ok') FROM requests").fetchone() == (12, 12)
    assert con.execute("SELECT count(*) FROM events").fetchone() == (192,)

    # The tab's figures at the end are the database's: each stage's `summary` row, and the run's.
    (bound,) = con.execute("SELECT client_delay_p99_ms FROM runs").fetchone()
    expected = {**stored(con, "summary"), **stored(con, "run_summary")}
    assert [r["stage"] for r in live["rows"]] == ["one", "two", "all"] and set(tab) == set(expected)
    for exact in live["rows"]:
        stage = exact["stage"]
        row = expected[stage]
        for key, value in exact.items():
            if key in row:
                assert value == pytest.approx(row[key]), (stage, key)
                assert tab[stage][key] == shown(row[key]), (stage, key)
        assert exact["requests"] == {"one": 5, "two": 7, "all": 12}[stage] and exact["errors_by_class"] == "-"
        assert exact["ttft_p99_ms"] > 0 and exact["itl_p50_ms"] > 0 and exact["goodput_rps"] > 0
        assert exact["timing_bound_ms"] == (bound if stage == "all" else None)
    # Its charts: figures per window, non-zero, with both stages' boundaries on the run clock.
    series = live["series"]
    for key in ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "output_tokens_per_s", "in_flight"):
        assert len(series[key]) == len(series["t_s"]) and max(v or 0 for v in series[key]) > 0, key
    assert sum(series["output_tokens_per_s"]) * series["width_s"] == pytest.approx(192)  # every token, once
    assert [s["stage"] for s in live["stages"]] == ["one", "two"]
    (two_sent,) = con.execute("SELECT min(sent_s) FROM requests WHERE stage = 'two'").fetchone()
    assert live["stages"][0]["start_s"] < live["stages"][1]["start_s"] <= two_sent


@pytest.mark.slow
def test_llm_tab_renders_its_table_and_charts_in_headless_chromium(write, tmp_path):
    workload = (
        "name: ui\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 2}\n"
        "requests: {prompt_tokens: 64, output_tokens: 64}\nstop: {requests: 24}\n"  # about 5 s: Chromium's 2 s in it
    )
    with web_ui(write, tmp_path, workload) as ui:
        get(ui.base + "/swarm", b"")
        while not ui.json("/loadgen/live")["rows"]:  # the first figures are stored: open the tab mid-run
            assert time.monotonic() < ui.deadline, "no figures reached the live view"
            time.sleep(0.2)
        shot = tmp_path / "llm.png"
        tab = f"{ui.base}/?tab=llm"
        dom = chromium(tmp_path, "--window-size=1600,1100", "--hide-scrollbars", "--virtual-time-budget=4000",
                       f"--screenshot={shot}", "--dump-dom", tab).stdout  # fmt: skip
        ui.final()
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert re.search(r">LLM<", dom), "no LLM tab"

    # The table: a row for the stage and one for the whole run, with figures in them.
    def text(cells: str, tag: str) -> list[str]:
        return [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(rf"<{tag}[^>]*>(.*?)</{tag}>", cells)]

    rows = [text(row, "td") for row in re.findall(r"<tr[^>]*>(.*?)</tr>", dom)]
    body = {r[0]: dict(zip(text(dom, "th"), r, strict=True)) for r in rows if r and r[0] in ("main", "all")}
    assert set(body) == {"main", "all"}, rows
    assert int(body["main"]["Requests"]) > 0 and float(body["main"]["TTFT p50 ms"].replace(",", "")) > 0
    # The charts: four of them, each drawn from non-zero figures, with the stage's boundary.
    charts = re.findall(r'<svg class="loadgen-chart" data-chart="(\w+)" data-points="(\d+)" data-max="([\d.]+)"', dom)
    assert [c[0] for c in charts] == ["ttft", "tpot", "tokens", "in_flight"], charts
    assert all(int(points) > 0 and float(top) > 0 for _, points, top in charts), charts
    assert dom.count('class="stage"') == 4
