"""The report page: one HTML file with the figures inlined, so it opens anywhere without a network."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import duckdb
import orjson

from loadgen.report import figures

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; } th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
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
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{path.stem}" src="data:image/png;base64,{data}"></figure>'


def write_report(db: Path, out: Path) -> Path:
    """Figures as PNG files and index.html in `out`; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = con.execute("SELECT run_id, endpoint, status FROM runs ORDER BY started_at").fetchall()
        if not runs:
            raise ValueError("the database holds no runs")
        latest = runs[-1][0]
        phase: list[Path] = []
        ttft = figures.ttft_vs_prompt(con, out)
        phase += [ttft] if ttft else []
        phase += figures.decode_vs_batch(con, out)
        dists = figures.cdfs(con, out)
        timeline = figures.run_timeline(con, latest, out)
        parts = [
            f"<h1>loadgen report: {html.escape(db.name)}</h1>",
            f"<p>{len(runs)} run(s); figures and tables from the database's views.</p>",
        ]
        gain = out / "disagg_gain.png"  # written by `loadgen disagg --figure` into this folder
        if gain.exists():
            phase.append(gain)
        if phase:
            parts += ["<h2>Phases</h2>", *map(_img, phase)]
            for view, order in (
                ("prefill", "endpoint, prompt_tokens"),
                ("decode", "endpoint, batch"),
                ("crossover", "endpoint, versus"),
            ):
                parts += [f"<h3>{view}</h3>", _table(con, f"SELECT * FROM {view} ORDER BY {order}")]
        parts += [
            "<h2>Summary</h2>",
            _table(
                con,
                "SELECT ru.endpoint, s.* EXCLUDE (start_s) FROM summary s JOIN runs ru USING (run_id) "
                "ORDER BY ru.started_at, s.start_s",
            ),
        ]
        if dists:
            parts += ["<h2>Distributions</h2>", *map(_img, dists)]
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
    finally:
        con.close()
    page = out / "index.html"
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>loadgen report</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    return page
