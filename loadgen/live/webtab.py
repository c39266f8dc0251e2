"""The LLM tab in Locust's web UI: the live feed's table (Locust's extended tabs and tables: its page polls
/stats/requests every 2 s, and the rows ride along as `extended_stats`), and charts over time, drawn by
static/llm.js from /loadgen/live (Locust's stock tabs draw tables only)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import flask

from loadgen.live.feed import OVERALL, LiveFeed, Snapshot

if TYPE_CHECKING:  # importing Locust patches the standard library for gevent: only where load is sent
    from locust.web import WebUI

TAB = "llm"
SCRIPT = Path(__file__).with_name("static") / "llm.js"

# (key, title): the tab's columns, each a `summary` column but for `errors_by_class` and `timing_bound_ms`.
COLUMNS = (
    ("stage", "Stage"),
    ("requests", "Requests"),
    ("errors", "Errors"),
    ("not_sent", "Not sent"),
    ("cancelled", "Cancelled"),  # abandoned by the workload (requests.cancel): not errors
    ("errors_by_class", "Errors by class"),  # as the `errors` view and the summary's table: not-sent ones too
    ("ttft_p50_ms", "TTFT p50 ms"),
    ("ttft_p90_ms", "TTFT p90 ms"),
    ("ttft_p99_ms", "TTFT p99 ms"),
    ("tpot_p50_ms", "TPOT p50 ms"),
    ("tpot_p90_ms", "TPOT p90 ms"),
    ("tpot_p99_ms", "TPOT p99 ms"),
    ("itl_p50_ms", "ITL p50 ms"),
    ("itl_p90_ms", "ITL p90 ms"),
    ("itl_p99_ms", "ITL p99 ms"),
    ("e2e_p50_ms", "E2E p50 ms"),
    ("answer_ttft_p50_ms", "Answer TTFT p50 ms"),  # a reasoning model's answer after its thinking (TTFT if none)
    ("output_tokens_per_s", "Out tok/s"),
    ("requests_per_s", "Req/s"),
    ("goodput_rps", "Goodput req/s"),
    ("lag_p99_ms", "Lag p99 ms"),
    ("timing_bound_ms", "Timing bound ms"),
)
# A run of agent tasks: each stage's task_summary figures too.
TASK_COLUMNS = (
    ("tasks_complete", "Tasks complete"),
    ("task_latency_p50_ms", "Task latency p50 ms"),
    ("slowdown_p50", "Slowdown p50"),
)


def columns(feed: LiveFeed) -> tuple[tuple[str, str], ...]:
    return COLUMNS + TASK_COLUMNS if feed.tasks else COLUMNS


def rows(s: Snapshot) -> list[dict[str, Any]]:
    """The tab's rows: each stage, then the run's (stage OVERALL), with the figures as the database has them.
    The timing bound is the run's (its p99 so far; at the end, runs.client_delay_p99_ms)."""
    out = []
    for row in [*s.stages, *([{**s.overall, "stage": OVERALL}] if s.overall else [])]:
        errors = s.errors.get(row["stage"], {})
        tasks = s.tasks.get(row["stage"]) or {}
        out.append(
            {
                **{key: row.get(key) for key, _ in COLUMNS},
                "errors_by_class": ", ".join(f"{k} {n}" for k, n in sorted(errors.items())) or "-",
                "timing_bound_ms": s.timing_bound_ms if row["stage"] == OVERALL else None,
                "tasks_complete": f"{tasks['complete']} of {tasks['tasks']}" if tasks else None,
                "task_latency_p50_ms": tasks.get("task_latency_p50_ms"),
                "slowdown_p50": tasks.get("slowdown_p50"),
            }
        )
    return out


def shown(v: Any) -> Any:
    """Locust's table prints values as they come: write them as the terminal does, '-' for none."""
    if v is None:
        return "-"
    return f"{v:,.1f}" if isinstance(v, float) else v


def add_llm_tab(web: WebUI, feed: LiveFeed) -> None:
    app = web.app

    @app.before_request
    def _index_with_the_tab() -> Any:
        if flask.request.path != "/":
            return None
        web.update_template_args()
        args = {
            **web.template_args,
            "extended_tabs": [{"title": "LLM", "key": TAB}],
            "extended_tables": [{"key": TAB, "structure": [{"key": k, "title": t} for k, t in columns(feed)]}],
        }
        page = flask.render_template("index.html", template_args=args)
        return page.replace("</body>", '<script src="./loadgen/llm.js"></script></body>', 1)

    @app.after_request
    def _with_the_rows(response: flask.Response) -> flask.Response:
        if flask.request.path != "/stats/requests" or response.json is None:
            return response
        data = [{k: shown(v) for k, v in row.items()} for row in rows(feed.snapshot)]
        response.set_data(flask.json.dumps({**response.json, "extended_stats": [{"key": TAB, "data": data}]}))
        return response

    @app.route("/loadgen/live")
    def _live() -> Any:
        s = feed.snapshot
        p = s.progress
        return flask.jsonify(
            {
                "rows": rows(s),
                "series": feed.windows.series(),
                "stages": [{"stage": name, "start_s": start} for name, start in feed.windows.stages],
                "progress": None if p is None else {"stage": p.stage, "elapsed_s": p.elapsed_s, "done": p.done},
                "final": s.final,
            }
        )

    @app.route("/loadgen/llm.js")
    def _script() -> Any:
        return flask.Response(SCRIPT.read_text(), mimetype="application/javascript")
