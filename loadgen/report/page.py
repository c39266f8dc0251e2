"""The report page: one HTML file with the figures inlined, so it opens anywhere without a network."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import duckdb
import orjson

from loadgen.analysis.findings import Finding, by_prefill_mode, verdict
from loadgen.report import figures
from loadgen.store.schema import counts

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; } th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
td.name { text-align: left; white-space: nowrap; }  /* run IDs, stages and endpoints stay on one line */
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return html.escape(str(v))


def _table(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    cur = con.execute(sql)
    cols = [c[0] for c in cur.description]
    rows = cur.fetchall()
    if not rows:
        return "<p><em>no rows</em></p>"
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in cols)
    body = "".join(
        "<tr>"
        + "".join(f"<td class='name'>{_fmt(v)}</td>" if isinstance(v, str) else f"<td>{_fmt(v)}</td>" for v in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{path.stem}" src="data:image/png;base64,{data}"></figure>'


def _findings(con: duckdb.DuckDBPyConnection, figs: dict[int, Path | None]) -> list[str]:
    """The study's four findings in words, each beside the figure it rests on; per prefill mode where the
    database holds a GroqRack under several."""
    per_mode = by_prefill_mode(con)
    first: list[Finding] = next(iter(per_mode.values()))
    if all(f.holds is None for f in first):
        return []
    parts = ["<h2>The study's findings, measured</h2>"]
    for i, f in enumerate(first):
        parts.append(f"<h3>({f.n}) {html.escape(f.study)}</h3>")
        for mode, found in per_mode.items():
            g = found[i]
            label = f"GroqRack prefill {mode}: " if mode else ""
            parts.append(f"<p><strong>{html.escape(label)}{verdict(g.holds)}.</strong> {html.escape(g.measured)}</p>")
        fig = figs.get(f.n)
        if fig is not None:
            parts.append(_img(fig))
    return parts


def write_report(con: duckdb.DuckDBPyConnection, name: str, out: Path) -> Path:
    """Figures as PNG files and index.html in `out`, from the database `con` reads (called `name`); returns the
    page's path."""
    out.mkdir(parents=True, exist_ok=True)
    runs = con.execute("SELECT run_id, endpoint, status FROM runs ORDER BY started_at").fetchall()
    if not runs:
        raise ValueError("the database holds no runs")
    latest = runs[-1][0]
    ttft = figures.ttft_vs_prompt(con, out)
    decode = figures.decode_vs_batch(con, out)
    prefill_batch = figures.prefill_vs_batch(con, out)
    phase = [p for p in (prefill_batch,) if p]
    dists = figures.cdfs(con, out)
    reuse = figures.prefix_reuse(con, out)
    slowdown = figures.task_slowdown(con, out)
    timeline = figures.run_timeline(con, latest, out)
    searched = figures.search_goodput(con, out)
    # The server's side, per run that sampled it (the latest twelve).
    states = [figures.server_state(con, run_id, out, i) for i, (run_id, _, _) in enumerate(runs[-12:])]
    parts = [
        f"<h1>loadgen report: {html.escape(name)}</h1>",
        f"<p>{len(runs)} run(s); figures and tables from the database's views.</p>",
    ]
    gain = out / "disagg_gain.png"  # written by `loadgen disagg --figure` into this folder
    tpot, throughput = decode if decode else (None, None)
    figs = {1: ttft, 2: tpot, 3: throughput, 4: gain if gain.exists() else None}
    found = _findings(con, figs)
    parts += found
    if not found:  # no finding to judge: the phase figures stand on their own
        phase = [p for p in figs.values() if p] + phase
    if ttft or decode:
        parts += ["<h2>Phases</h2>", *map(_img, phase)]
        for view, order in (
            ("prefill", "endpoint, prompt_tokens, batch"),
            ("decode", "endpoint, batch"),
            ("crossover", "endpoint, versus"),
        ):
            parts += [f"<h3>{view}</h3>", _table(con, f"SELECT * FROM {view} ORDER BY {order}")]
    # Two tables, so that each fits a 1280-px page: counts and rates, then latencies.
    order = "FROM summary s JOIN runs ru USING (run_id) ORDER BY ru.started_at, s.start_s"
    parts += [
        "<h2>Summary</h2>",
        "<h3>Requests and rates</h3>",
        _table(
            con,
            "SELECT ru.endpoint, s.run_id, s.stage, s.requests, s.errors, s.not_sent, s.cancelled, "
            f"s.output_tokens_per_s, s.requests_per_s, s.goodput_rps, s.lag_p50_ms, s.lag_p99_ms, s.span_s {order}",
        ),
        "<h3>Latencies (ms)</h3>",
        _table(
            con,
            "SELECT s.run_id, s.stage, s.ttft_p50_ms, s.ttft_p90_ms, s.ttft_p99_ms, s.tpot_p50_ms, s.tpot_p90_ms, "
            f"s.tpot_p99_ms, s.itl_p50_ms, s.itl_p90_ms, s.itl_p99_ms, s.e2e_p50_ms, s.e2e_p90_ms, s.e2e_p99_ms, "
            f"s.ttft_sched_p50_ms, s.ttft_sched_p99_ms {order}",
        ),
    ]
    (thought,) = con.execute("SELECT count(*) FROM summary WHERE reasoning_share IS NOT NULL").fetchone()
    if thought:  # a reasoning model: when the answer came after the thinking, and each phase's own pace
        parts += [
            "<h3>Reasoning (ms)</h3>",
            _table(
                con,
                "SELECT s.run_id, s.stage, s.reasoning_share, s.ttft_p50_ms, s.answer_ttft_p50_ms, "
                "s.answer_ttft_p90_ms, median(r.reasoning_tpot_ms) AS reasoning_tpot_p50_ms, "
                f"median(r.answer_tpot_ms) AS answer_tpot_p50_ms FROM summary s JOIN requests r USING (run_id, stage) "
                f"JOIN runs ru USING (run_id) WHERE s.reasoning_share IS NOT NULL AND {counts('r')} "
                "GROUP BY ALL ORDER BY any_value(ru.started_at), any_value(s.start_s)",
            ),
        ]
    if dists:
        parts += ["<h2>Distributions</h2>", *map(_img, dists)]
    if reuse:
        parts += ["<h2>Prefix reuse</h2>", *map(_img, reuse)]
        parts += [
            "<h3>Conversations (sessions view), per run</h3>",
            _table(
                con,
                "SELECT run_id, count(*) AS sessions, avg(turns) AS mean_turns, "
                "quantile_cont(total_s, 0.5) AS total_p50_s, avg(cached_share) AS mean_cached_share "
                "FROM sessions GROUP BY run_id ORDER BY run_id",
            ),
        ]
    (tasks,) = con.execute("SELECT count(*) FROM task_summary").fetchone()
    if tasks:
        parts += ["<h2>Agent tasks</h2>", *([_img(slowdown)] if slowdown else [])]
        parts.append(
            _table(
                con,
                "SELECT ts.run_id, ts.stage, ts.tasks, ts.complete, ts.task_latency_p50_ms, ts.task_latency_p90_ms, "
                "ts.slowdown_p50, ts.slowdown_p90, ts.cached_share, ts.slo_share, ts.task_goodput_per_s "
                "FROM task_summary ts JOIN runs ru USING (run_id) JOIN stages st USING (run_id, stage) "
                "ORDER BY ru.started_at, st.idx",
            )
        )
    if searched:
        parts += ["<h2>Capacity</h2>", _img(searched)]
        parts.append(_table(con, "SELECT * FROM capacity ORDER BY endpoint"))
    if any(states):
        parts += ["<h2>The server's side</h2>", *(_img(p) for p in states if p)]
    if timeline:
        parts += [f"<h2>The latest run: {html.escape(latest)}</h2>", *map(_img, timeline)]
    parts += ["<h2>Errors</h2>", _table(con, "SELECT * FROM errors ORDER BY run_id, stage")]
    parts.append("<h2>Run specs</h2>")
    for run_id, endpoint, status in runs:
        (spec,) = con.execute("SELECT spec FROM runs WHERE run_id = ?", [run_id]).fetchone()
        pretty = orjson.dumps(orjson.loads(spec), option=orjson.OPT_INDENT_2).decode()
        parts.append(
            f"<details><summary>{html.escape(run_id)} on {html.escape(endpoint)} ({status})</summary>"
            f"<pre>{html.escape(pretty)}</pre></details>"
        )
    page = out / "index.html"
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>loadgen report</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    return page
