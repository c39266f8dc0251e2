"""Comparing two runs or endpoints, in one database or in two (a measured server's run and its twin's): p50 and
p90 of TTFT, TPOT, E2E and ITL (and of a reasoning model's time to its answer's first token, where either side
thought) and the output tokens per second, per stage (stages matched by name) and over the whole run, with the
error B/A - 1 and 95% bootstrap intervals of B - A.

Every figure is the store's own: the quantiles are the `summary` view's query over each side's requests (several
runs of an endpoint pooled), the rates the `summary` and `run_summary` views' (several runs: `pooled_rate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from loadgen.store.schema import counts, pooled_rate, summary_select

# The quantiles compared, and the metrics whose requests' values the bootstrap resamples (ITL is a quantile of
# gaps within requests, not of requests: it has no interval here, nor has the rate).
QUANTILES = (50, 90)
LATENCIES = ("ttft_ms", "answer_ttft_ms", "tpot_ms", "e2e_ms", "itl_ms")
RESAMPLED = ("ttft_ms", "answer_ttft_ms", "tpot_ms", "e2e_ms")
THOUGHT = "reasoning_share"  # the summary's: not None where the stage's requests thought
RATE = "output_tokens_per_s"
RESAMPLES = 2000


class NotComparable(Exception):
    """A side that cannot be compared; `side` is "a" or "b" (whose database to name)."""

    def __init__(self, side: str, why: str) -> None:
        super().__init__(why)
        self.side = side


@dataclass
class Row:
    stage: str | None  # None: the whole run, every stage together
    metric: str
    quantile: int | None  # None: a rate
    a: float
    b: float
    low: float | None = None  # 95% bootstrap interval of b - a, where the metric has one
    high: float | None = None

    @property
    def delta(self) -> float:
        return self.b - self.a

    @property
    def error(self) -> float | None:
        """B/A - 1: B's relative error, where A is the measured figure and B the predicted one."""
        return self.b / self.a - 1 if self.a else None


@dataclass
class _Side:
    figures: dict[str | None, dict[str, float | None]]  # stage (None: whole run) -> metric column -> value
    stages: list[str]  # in the order they started
    values: dict[str, dict[str | None, np.ndarray]]  # metric -> stage (None: whole run) -> the requests' values


def _side(con: duckdb.DuckDBPyConnection, who: str, side: str) -> _Side:
    """`who`'s figures, stages and values in `con`: a run, or an endpoint's runs pooled."""
    runs = [
        r for (r,) in con.execute("SELECT run_id FROM runs WHERE run_id = ? OR endpoint = ?", [who, who]).fetchall()
    ]
    if not runs:
        raise NotComparable(side, f"no run or endpoint named {who!r}")
    params = {"runs": runs}
    (ok,) = con.execute(
        f"SELECT count(*) FROM requests WHERE list_contains($runs, run_id) AND {counts()}", params
    ).fetchone()
    if ok == 0:
        raise NotComparable(side, f"{who!r} has no ok requests outside warm-up to compare")
    picked = "WITH picked AS (SELECT *, 0 AS whole FROM requests WHERE list_contains($runs, run_id))"
    columns = [f"{m.removesuffix('_ms')}_p{q}_ms" for m in LATENCIES for q in QUANTILES]
    figures: dict[str | None, dict[str, float | None]] = {}
    starts: dict[str, float] = {}
    for keys in ("stage", "whole"):
        cur = con.execute(f"{picked} SELECT * FROM ({summary_select(keys, 'picked')})", params)
        names = [c[0] for c in cur.description]
        for row in cur.fetchall():
            got = dict(zip(names, row, strict=True))
            stage = got["stage"] if keys == "stage" else None
            figures[stage] = {c: got[c] for c in (*columns, THOUGHT)}
            if stage is not None:
                starts[stage] = got["start_s"]
    rates = f"SELECT {{key}}, {pooled_rate(RATE)} FROM {{view}} WHERE list_contains($runs, run_id) GROUP BY ALL"
    for stage, rate in con.execute(rates.format(key="stage", view="summary"), params).fetchall():
        figures[stage][RATE] = rate
    for _, rate in con.execute(rates.format(key="0", view="run_summary"), params).fetchall():
        figures[None][RATE] = rate
    values: dict[str, dict[str | None, np.ndarray]] = {}
    for metric in RESAMPLED:
        by_stage = con.execute(
            f"SELECT stage, list({metric}) FROM requests WHERE list_contains($runs, run_id) AND {counts()} "
            f"AND {metric} IS NOT NULL GROUP BY stage",
            params,
        ).fetchall()
        values[metric] = {stage: np.array(v, dtype=float) for stage, v in by_stage}
        values[metric][None] = np.concatenate([np.array(v, dtype=float) for _, v in by_stage] or [np.array([])])
    return _Side(figures, sorted(starts, key=lambda s: (starts[s] is None, starts[s] or 0)), values)


def _interval(rng: np.random.Generator, va: np.ndarray, vb: np.ndarray) -> Callable[[int], tuple[float, float]] | None:
    """The 95% bootstrap interval of B - A at each quantile, from one draw of resamples for both quantiles."""
    if len(va) == 0 or len(vb) == 0:
        return None
    ia = rng.integers(0, len(va), (RESAMPLES, len(va)))
    ib = rng.integers(0, len(vb), (RESAMPLES, len(vb)))

    def at(q: int) -> tuple[float, float]:
        boot = np.percentile(vb[ib], q, axis=1) - np.percentile(va[ia], q, axis=1)
        low, high = np.percentile(boot, [2.5, 97.5])
        return float(low), float(high)

    return at


def compare_runs(
    con_a: duckdb.DuckDBPyConnection,
    a: str,
    con_b: duckdb.DuckDBPyConnection,
    b: str,
    seed: int = 0,
    said: Callable[[str], None] = lambda _: None,
) -> list[Row]:
    """`a` in `con_a` against `b` in `con_b` (the same connection, or another database: a twin's run); each a
    run ID or an endpoint name (its runs pooled). The whole run's rows first, then each stage both sides have, in
    A's order (not when each side is that one stage alone). A metric either side lacks is left out; stages only
    one side has are said through `said`. NotComparable when a side is unknown or has no ok request."""
    sa, sb = _side(con_a, a, "a"), _side(con_b, b, "b")
    common = [s for s in sa.stages if s in sb.stages]
    apart = [
        f"only in {who}: {', '.join(s)}"
        for who, s in (
            (a, [s for s in sa.stages if s not in sb.stages]),
            (b, [s for s in sb.stages if s not in sa.stages]),
        )
        if s
    ]
    if apart:
        said(f"stages compared by name; left out, {'; '.join(apart)}")
    stages: list[str | None] = [None]
    if common and not (len(sa.stages) == len(sb.stages) == 1):
        stages += common
    rng = np.random.default_rng(seed)
    out = []
    for stage in stages:
        fa, fb = sa.figures[stage], sb.figures[stage]
        thought = fa[THOUGHT] is not None or fb[THOUGHT] is not None
        for metric in LATENCIES:
            if metric == "answer_ttft_ms" and not thought:  # TTFT again, where nothing was thought
                continue
            draw = None
            if metric in RESAMPLED:
                empty = np.array([])
                draw = _interval(rng, sa.values[metric].get(stage, empty), sb.values[metric].get(stage, empty))
            for q in QUANTILES:
                col = f"{metric.removesuffix('_ms')}_p{q}_ms"
                if fa[col] is None or fb[col] is None:
                    continue
                low, high = draw(q) if draw else (None, None)
                out.append(Row(stage, metric, q, fa[col], fb[col], low, high))
        if fa.get(RATE) is not None and fb.get(RATE) is not None:
            out.append(Row(stage, RATE, None, fa[RATE], fb[RATE]))
    return out


TABLE_COLUMNS = ["stage", "metric", "quantile", "A", "B", "B - A", "95% interval", "error (B/A - 1)"]
DATA_COLUMNS = ["stage", "metric", "quantile", "a", "b", "b_minus_a", "low", "high", "error"]


def tabulate(rows: list[Row], fmt: str = "table") -> tuple[list[str], list[tuple[Any, ...]]]:
    """The columns and cells to print: for people ("table": the whole run as "whole run", the error as a
    percentage), or values as they are for programs ("csv", "json": the whole run's stage empty, the error a
    fraction, 0.1 = B 10% above A)."""
    if fmt != "table":
        return DATA_COLUMNS, [
            (r.stage, r.metric, f"p{r.quantile}" if r.quantile else None, r.a, r.b, r.delta, r.low, r.high, r.error)
            for r in rows
        ]
    return TABLE_COLUMNS, [
        (
            "whole run" if r.stage is None else r.stage,
            r.metric,
            f"p{r.quantile}" if r.quantile else "-",
            r.a,
            r.b,
            r.delta,
            "-" if r.low is None or r.high is None else f"[{r.low:,.2f}, {r.high:,.2f}]",
            "-" if r.error is None else f"{r.error:+.1%}",
        )
        for r in rows
    ]
