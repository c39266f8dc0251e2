"""Terminal output with rich: live progress, summary tables, query results, previews."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from loadgen.schedule.plan import Preview


class Output(Console):
    """A console that never elides a value. In a terminal, table cells that do not fit wrap (columns fold);
    piped or in CI (not a terminal, 80 columns by default) it widens to what it prints instead."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        tables = [o for o in objects if isinstance(o, Table | Group)]
        if self.is_terminal or not tables:
            super().print(*objects, **kwargs)
            return
        unbounded = self.options.update_width(1_000_000)
        need = max(self.measure(o, options=unbounded).maximum for o in tables)
        saved = self._width
        self.width = max(need, self.width)  # print() caps its own width option at the console's
        try:
            super().print(*objects, **kwargs)
        finally:
            self._width = saved


class FoldingTable(Table):
    """A table whose columns fold (wrap) rather than cut what does not fit."""

    def add_column(self, *args: Any, overflow: Any = "fold", **kwargs: Any) -> None:  # type: ignore[override]
        super().add_column(*args, overflow=overflow, **kwargs)


def table(title: str | None = None, **kwargs: Any) -> Table:
    return FoldingTable(title=title, title_justify="left", header_style="bold", **kwargs)


out = Output()
err = Output(stderr=True)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(v)


def precise(v: Any) -> str:
    """A query's value as stored, to the microsecond for seconds: six decimals, trailing zeros dropped."""
    if isinstance(v, float):
        text = f"{v:,.6f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    return "-" if v is None else str(v)


SUMMARY_COLUMNS = (
    ("stage", "stage"),
    ("requests", "requests"),
    ("errors", "errors"),
    ("not_sent", "not sent"),
    ("cancelled", "cancelled"),
    ("ttft_p50_ms", "TTFT p50"),
    ("ttft_p90_ms", "TTFT p90"),
    ("ttft_p99_ms", "TTFT p99"),
    ("tpot_p50_ms", "TPOT p50"),
    ("tpot_p90_ms", "TPOT p90"),
    ("tpot_p99_ms", "TPOT p99"),
    ("itl_p50_ms", "ITL p50"),
    ("itl_p90_ms", "ITL p90"),
    ("itl_p99_ms", "ITL p99"),
    ("e2e_p50_ms", "E2E p50"),
    ("lag_p99_ms", "lag p99"),
    ("output_tokens_per_s", "out tok/s"),
    ("requests_per_s", "req/s"),
    ("goodput_rps", "goodput req/s"),
    ("cached_share", "cached prompt %"),
    ("answer_ttft_p50_ms", "answer TTFT p50"),
    ("answer_ttft_p90_ms", "answer TTFT p90"),
    ("reasoning_share", "thinking tokens %"),
)
# Columns shown only where a stage has the figure that says they apply: cached tokens the server reported, a
# reasoning model's thinking, and requests the workload abandoned.
SHOWN_WHERE: dict[str, Callable[[dict[str, Any]], bool]] = {
    "cancelled": lambda r: bool(r.get("cancelled")),
    "cached_share": lambda r: r.get("cached_share") is not None,
    **dict.fromkeys(
        ("answer_ttft_p50_ms", "answer_ttft_p90_ms", "reasoning_share"), lambda r: r.get("reasoning_share") is not None
    ),
}


def _cell(key: str, v: Any) -> str:
    if key.endswith("_ms"):
        return _ms(v)
    if key.endswith("_share"):
        return "-" if v is None else f"{v:.1%}"
    return _num(v)


def summary_table(title: str, rows: Sequence[dict[str, Any]]) -> Table:
    """Few stages: one column per stage (fits a narrow terminal); many stages (sweeps): one row per stage."""
    columns = [
        (k, label) for k, label in SUMMARY_COLUMNS if k not in SHOWN_WHERE or any(SHOWN_WHERE[k](r) for r in rows)
    ]
    if len(rows) <= 5:
        t = table(title)
        t.add_column("metric")
        for row in rows:
            t.add_column(str(row["stage"]), justify="right")
        for key, label in columns[1:]:
            t.add_row(label + (" ms" if key.endswith("_ms") else ""), *(_cell(key, r[key]) for r in rows))
        return t
    t = table(title)
    for key, label in columns:
        t.add_column(label + (" ms" if key.endswith("_ms") else ""), justify="left" if key == "stage" else "right")
    for row in rows:
        t.add_row(*(_cell(k, row[k]) for k, _ in columns))
    return t


TASK_COLUMNS = (
    ("stage", "stage"),
    ("tasks", "tasks"),
    ("complete", "complete"),
    ("task_latency_p50_ms", "latency p50"),
    ("task_latency_p90_ms", "latency p90"),
    ("slowdown_p50", "slowdown p50"),
    ("slowdown_p90", "slowdown p90"),
    ("cached_share", "cached prompt"),
    ("slo_share", "within SLO"),
    ("task_goodput_per_s", "task goodput /s"),
)


def tasks_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Agent tasks per stage (the task_summary view): one row per stage."""
    t = table("agent tasks")
    for key, label in TASK_COLUMNS:
        t.add_column(label + (" ms" if key.endswith("_ms") else ""), justify="left" if key == "stage" else "right")
    for row in rows:
        t.add_row(*(_cell(k, row[k]) for k, _ in TASK_COLUMNS))
    return t


def errors_table(rows: Sequence[dict[str, Any]]) -> Table:
    t = table("errors by class")
    for col in ("stage", "error", "requests", "example"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["stage"], r["error"] or "-", str(r["requests"]), (r["example"] or "")[:100])
    return t


def result_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Any = _num) -> Table:
    t = table()
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*(fmt(v) for v in row))
    return t


FORMATS = ("table", "csv", "json")


def emit(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", cell: Any = _num) -> None:
    """Rows on stdout: a table for people, or CSV or JSON (values as they are) for programs."""
    if fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows(["" if v is None else v for v in row] for row in rows)
    elif fmt == "json":
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        sys.stdout.write(orjson.dumps(records, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.print(result_table(columns, rows, cell))


def preview_table(previews: Sequence[Preview]) -> Table:
    t = table("schedule preview")
    for c in (
        "stage",
        "arrival",
        "users/cap",
        "requests",
        "duration s",
        "rate /s",
        "prompt p10/50/90",
        "output p10/50/90",
    ):
        t.add_column(c)
    for p in previews:
        groups = "sessions" if p.sessions is not None else "tasks" if p.tasks is not None else None
        t.add_row(
            p.stage,
            p.arrival if groups is None else f"{p.arrival}, {groups}",
            str(p.users),
            ("until duration" if p.requests is None else str(p.requests))
            + ("" if groups is None else f" in {p.sessions or p.tasks} {groups}"),
            _num(p.duration_s),
            _num(p.rate),
            "/".join(map(str, p.prompt_pcts)),
            "/".join(map(str, p.output_pcts)),
        )
    return t


def _load(over: str, v: float | None, unit: str = "requests") -> str:
    if v is None:
        return "-"
    if over == "concurrency":
        return f"{v:,.0f} user{'' if round(v) == 1 else 's'}"
    return f"{v:,.4g} {'req' if unit == 'requests' else unit}/s"


def trials_table(
    run_id: str, over: str, target: float, rows: Sequence[Sequence[Any]], verdict: str, unit: str = "requests"
) -> Table:
    """A search's trials in the order run: load, requests (or agent tasks, each judged whole), the share meeting
    the SLO, and how its load was judged (all trials at one load pooled)."""
    t = table(f"search {run_id}: the share of {unit} meeting every SLO, against {target:.0%}; verdict: {verdict}")
    for c in ("trial", "load", unit, "SLO met", "load judged"):
        t.add_column(c)
    for stage, load, requests, share, passed, saturated, held in rows:
        judged = "pass" if passed else "fail"
        if saturated:
            judged += " (saturated)"
        elif held:
            judged += " (held back: raise load.concurrency)"
        elif not requests:
            judged += " (nothing measured: every request was warm-up or unsent)"
        t.add_row(stage, _load(over, load, unit), _num(requests), "-" if share is None else f"{share:.1%}", judged)
    return t


def capacity_table(
    rows: Sequence[dict[str, Any]], verdicts: dict[str, str], target: float, unit: str = "requests"
) -> Table:
    """Per endpoint: the highest load meeting the SLO (below the lowest that did not), output tokens/s there and,
    with a price, the cost of a million output tokens."""
    t = table(f"capacity: the highest load with at least {target:.0%} of {unit} meeting every SLO")
    for c in ("endpoint", "capacity", "lowest failing", "verdict", "out tok/s", "price/h", "per 1M out tok"):
        t.add_column(c)
    for r in rows:
        price = r["price_per_hour"]
        cur = r["currency"] or ""
        t.add_row(
            r["endpoint"],
            _load(r["over"], r["highest_passing"], unit),
            _load(r["over"], r["lowest_failing"], unit),
            verdicts.get(r["run_id"], "-"),
            _num(r["output_tokens_per_s"]),
            "-" if price is None else f"{price:,.2f} {cur}",
            "-" if r["cost_per_million_output_tokens"] is None else f"{r['cost_per_million_output_tokens']:,.2f} {cur}",
        )
    return t


BARS = " ▁▂▃▄▅▆▇█"


def trace_info(path: Any, info: Any) -> Group:
    """A trace's figures and its arrival rate over time as a one-line chart."""
    t = table(str(path), show_header=False)
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("rows", f"{info.rows:,}")
    t.add_row("malformed rows (left out)", f"{info.bad_rows:,}")
    t.add_row("span", f"{info.span_s:,.1f} s")
    t.add_row("mean rate", f"{info.rate_per_s:,.2f} req/s")
    for q, v in info.prompt_pcts.items():
        t.add_row(f"prompt tokens p{q}", f"{v:,}")
    for q, v in info.output_pcts.items():
        t.add_row(f"output tokens p{q}", f"{v:,}")
    top = max(info.rate_over_time) or 1.0
    chart = "".join(BARS[min(int(r / top * (len(BARS) - 1) + 0.5), len(BARS) - 1)] for r in info.rate_over_time)
    caption = Text.assemble(
        ("rate over time ", "bold"), f"({info.bin_s:,.1f} s bins, peak {top:,.2f} req/s)\n", (chart, "cyan")
    )
    return Group(t, caption)
