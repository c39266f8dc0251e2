"""The report's figures, drawn with matplotlib (no display needed) from the database's tables and views."""

from __future__ import annotations

from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from loadgen.store.schema import SERVER_PROMPT, counts  # noqa: E402

DPI = 110


PLAIN = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,g}")


def plain_numbers(fig: plt.Figure) -> None:
    """Every figure's one tick style: plain numbers (1, 2, 5, 10, 20, ... on log axes; no 10^n, no offsets);
    axes labelled at chosen values (the measured batches and lengths) keep those labels."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_locator(), matplotlib.ticker.FixedLocator):
                continue  # labelled at chosen values
            if axis.get_scale() == "log":
                lo, hi = sorted(axis.get_view_interval())
                wide = axis is ax.xaxis and hi > lo > 0 and np.log10(hi / lo) > 2.5  # labels side by side crowd
                axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
                axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            axis.set_major_formatter(PLAIN)


def _save(fig: plt.Figure, path: Path) -> Path:
    plain_numbers(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _gridded(fig: plt.Figure, ax: plt.Axes, path: Path) -> Path:
    """Grid and legend, then save."""
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _ticks(ax: plt.Axes, values: list[int]) -> None:
    """Label the log x axis at the measured values themselves."""
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _by_endpoint(rows: list[tuple]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(r[1:])
    return out


def _lines(ax: plt.Axes, groups: dict[str, list[tuple]], band: bool = True) -> None:
    """One line per endpoint through (x, p50); with `band`, shaded up to p90 (the third value)."""
    for ep, pts in groups.items():
        x, y = [p[0] for p in pts], [p[1] for p in pts]
        line = ax.plot(x, y, marker="o", label=ep)[0]
        if band:
            ax.fill_between(x, y, [p[2] for p in pts], color=line.get_color(), alpha=0.15)


def _finish(ax: plt.Axes, xs: list[int], xlabel: str, ylabel: str, title: str) -> None:
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
    _ticks(ax, xs)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()


def _line_figure(rows: list[tuple], path: Path, xlabel: str, ylabel: str, title: str, band: bool = True) -> Path:
    """Rows of (line, x, p50[, p90]) on log axes, one line per first value."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _lines(ax, _by_endpoint(rows), band=band)
    _finish(ax, sorted({r[1] for r in rows}), xlabel, ylabel, title)
    return _save(fig, path)


def ttft_vs_prompt(con: duckdb.DuckDBPyConnection, out: Path) -> Path | None:
    rows = con.execute(
        "SELECT endpoint, prompt_tokens, ttft_p50_ms, ttft_p90_ms FROM prefill "
        "WHERE batch = (SELECT min(batch) FROM prefill) ORDER BY 1, 2"
    ).fetchall()
    if not rows:
        return None
    return _line_figure(
        rows,
        out / "ttft_vs_prompt.png",
        "prompt tokens",
        "TTFT (ms), p50 line, band to p90",
        "Prefill: time to first token against prompt length, one request at a time",
    )


def prefill_vs_batch(con: duckdb.DuckDBPyConnection, out: Path) -> Path | None:
    """Prefill throughput against batch, for the prompt lengths measured at more than one batch."""
    rows = con.execute(
        "SELECT endpoint || ', ' || prompt_tokens || ' tokens', batch, prefill_tokens_per_s FROM prefill "
        "WHERE prompt_tokens IN (SELECT prompt_tokens FROM prefill GROUP BY ALL HAVING count(DISTINCT batch) > 1) "
        "ORDER BY 1, 2"
    ).fetchall()
    if not rows:
        return None
    return _line_figure(
        rows,
        out / "prefill_vs_batch.png",
        "batch (concurrent requests)",
        "prompt tokens/s while prefilling",
        "Prefill throughput against batch",
        band=False,
    )


def decode_vs_batch(con: duckdb.DuckDBPyConnection, out: Path) -> list[Path]:
    rows = con.execute(
        "SELECT endpoint, batch, tpot_p50_ms, tpot_p90_ms, decode_tokens_per_s FROM decode ORDER BY 1, 2"
    ).fetchall()
    if not rows:
        return []
    batch = "batch (concurrent requests)"
    tpot = _line_figure(
        rows, out / "tpot_vs_batch.png", batch, "TPOT (ms), p50 to p90", "Decode: time per output token against batch"
    )
    throughput = _line_figure(
        [(r[0], r[1], r[4]) for r in rows],
        out / "throughput_vs_batch.png",
        batch,
        "tokens/s while decoding (after each first token)",
        "Decode throughput against batch (decode phase only)",
        band=False,
    )
    return [tpot, throughput]


def cdfs(con: duckdb.DuckDBPyConnection, out: Path) -> list[Path]:
    paths = []
    for metric, label in (("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms)")):
        rows = con.execute(
            f"SELECT ru.endpoint, list({metric} ORDER BY {metric}) FROM requests r JOIN runs ru USING (run_id) "
            f"WHERE {counts('r')} AND {metric} IS NOT NULL GROUP BY 1 ORDER BY 1"
        ).fetchall()
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for ep, values in rows:
            v = np.asarray(values)
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=f"{ep} (n={len(v)})")
        ax.set(
            xscale="log", xlabel=label, ylabel="share of requests", title=f"CDF of {label.split()[0]}", ylim=(0, 1.01)
        )
        paths.append(_gridded(fig, ax, out / f"cdf_{metric.removesuffix('_ms')}.png"))
    return paths


def prefix_reuse(con: duckdb.DuckDBPyConnection, out: Path) -> list[Path]:
    """Where the server reported cached prompt tokens: TTFT against the share of the prompt it held; where
    requests belong to conversations: TTFT against turn (p50 line, band to p90)."""
    paths = []
    rows = con.execute(
        f"SELECT ru.endpoint, list(r.cached_tokens / {SERVER_PROMPT} ORDER BY r.request_id), "
        "list(r.ttft_ms ORDER BY r.request_id) FROM requests r JOIN runs ru USING (run_id) "
        f"WHERE {counts('r')} AND r.cached_tokens IS NOT NULL AND r.ttft_ms IS NOT NULL GROUP BY 1 "
        "HAVING max(r.cached_tokens) > 0 ORDER BY 1"
    ).fetchall()
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for ep, share, ttft in rows:
            ax.scatter(share, ttft, s=12, alpha=0.6, label=f"{ep} (n={len(share)})")
        ax.set(
            yscale="log",
            xlabel="share of the prompt the server's prefix cache held",
            ylabel="TTFT (ms)",
            title="Prefix reuse: time to first token against the cached share of the prompt",
            xlim=(-0.02, 1.02),
        )
        paths.append(_gridded(fig, ax, out / "ttft_vs_cached_share.png"))
    rows = con.execute(
        "SELECT ru.endpoint, r.turn, quantile_cont(r.ttft_ms, 0.5), quantile_cont(r.ttft_ms, 0.9) "
        f"FROM requests r JOIN runs ru USING (run_id) WHERE {counts('r')} AND r.turn IS NOT NULL "
        "AND r.ttft_ms IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        _lines(ax, _by_endpoint(rows))
        ax.set(yscale="log", xlabel="turn", ylabel="TTFT (ms), p50 line, band to p90", title="TTFT by turn")
        ax.set_xticks(sorted({r[1] for r in rows}))
        paths.append(_gridded(fig, ax, out / "ttft_vs_turn.png"))
    return paths


def task_slowdown(con: duckdb.DuckDBPyConnection, out: Path) -> Path | None:
    """Agent tasks: each task's latency against its critical path on the idle endpoint, one colour per run and
    stage; the diagonal is a slowdown of 1."""
    rows = con.execute(
        "SELECT t.run_id || ' ' || t.stage, list(t.idle_critical_path_ms ORDER BY t.task_id), "
        "list(t.task_latency_ms ORDER BY t.task_id) FROM tasks t JOIN runs ru USING (run_id) "
        "WHERE t.slowdown IS NOT NULL GROUP BY 1, ru.started_at ORDER BY ru.started_at, 1"
    ).fetchall()
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, idle, latency in rows:
        ax.scatter(idle, latency, s=14, alpha=0.7, label=f"{label} (n={len(idle)})")
    lo = min(min(i) for _, i, _ in rows)
    hi = max(max(max(i), max(t)) for _, i, t in rows)
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, label="slowdown 1")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="critical path on the idle endpoint (ms)",
        ylabel="task latency (ms)",
        title="Agent tasks: latency against the idle critical path",
    )
    return _gridded(fig, ax, out / "task_slowdown.png")


def run_timeline(con: duckdb.DuckDBPyConnection, run_id: str, out: Path, limit: int = 300) -> list[Path]:
    """Each request's send, first token and end; and throughput and requests in flight over time."""
    rows = con.execute(
        "SELECT sent_s, first_token_s, end_s, status FROM requests WHERE run_id = ? AND end_s IS NOT NULL "
        "ORDER BY sent_s",
        [run_id],
    ).fetchall()
    if not rows:
        return []
    shown = rows[:: max(1, len(rows) // limit)]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    # One collection of segments and one line of markers: an artist for each request costs a second to draw.
    sent, first, end, status = zip(*shown, strict=True)
    colors = ["tab:blue" if s == "ok" else "tab:red" for s in status]
    ax.hlines(range(len(shown)), sent, end, colors=colors, lw=0.8)
    marked = [(t, i) for i, t in enumerate(first) if t is not None]
    if marked:
        ax.plot(*zip(*marked, strict=True), linestyle="none", marker="|", color="black", ms=4)
    ax.set(
        xlabel="seconds since the run's start",
        ylabel="request (in send order)",
        title=f"Timeline of {run_id}: send to end, | first token, red failed"
        + (f" (every {len(rows) // len(shown)}th)" if len(shown) < len(rows) else ""),
    )
    timeline = _save(fig, out / "timeline.png")
    ts = np.array([r[0] for r in con.execute("SELECT t_s FROM events WHERE run_id = ?", [run_id]).fetchall()])
    end_all = max(r[2] for r in rows)
    bin_s = max(end_all / 120, 0.05)
    edges = np.arange(0, end_all + bin_s, bin_s)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    if len(ts):
        counts, _ = np.histogram(ts, edges)
        ax.plot(edges[:-1], counts / bin_s, color="tab:green", label="output events/s")
    ax.set(
        xlabel="seconds since the run's start",
        ylabel="output events per second",
        title=f"Throughput and requests in flight over time: {run_id}",
    )
    ax2 = ax.twinx()
    ax2.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # requests come whole
    starts = np.array([r[0] for r in rows])
    ends = np.array([r[2] for r in rows])
    inflight = [(np.sum((starts <= t) & (ends > t))) for t in edges[:-1]]
    ax2.step(edges[:-1], inflight, where="post", color="tab:purple", label="in flight")
    ax2.set_ylabel("requests in flight")
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left")
    return [timeline, _save(fig, out / "throughput_inflight.png")]


def server_state(con: duckdb.DuckDBPyConnection, run_id: str, out: Path, index: int) -> Path | None:
    """The client's TTFT over the run, and beneath it on the same clock the server's running and waiting requests
    and KV-cache usage (server_series); None when the run sampled no server metrics."""
    series = con.execute(
        "SELECT series, list(t_s ORDER BY t_s), list(value ORDER BY t_s) FROM server_series "
        "WHERE run_id = ? AND series IN ('running', 'waiting', 'kv_usage') GROUP BY series",
        [run_id],
    ).fetchall()
    if not series:
        return None
    by = {name: (np.array(t), np.array(v)) for name, t, v in series}
    ttft = con.execute(
        "SELECT sent_s, ttft_ms FROM requests WHERE run_id = ? AND ttft_ms IS NOT NULL ORDER BY sent_s", [run_id]
    ).fetchall()
    # A server that exports no KV-cache gauge (llama.cpp since 2025, TGI) gets no empty panel for it.
    kv = "kv_usage" in by
    fig, axes = plt.subplots(
        3 if kv else 2, 1, figsize=(8, 7 if kv else 5.6), sharex=True, height_ratios=(2, 1.4, 1)[: 3 if kv else 2]
    )
    top, mid, low = (*axes, None) if not kv else axes
    if ttft:
        top.plot([r[0] for r in ttft], [r[1] for r in ttft], ".", ms=2.5, color="tab:blue", label="TTFT, at send")
    top.set(ylabel="TTFT (ms)", title=f"Client TTFT and the server's state: {run_id}")
    top.legend(loc="upper left")
    for name, color in (("running", "tab:green"), ("waiting", "tab:red")):
        if name in by:
            mid.step(*by[name], where="post", color=color, label=name)
    mid.set(ylabel="requests")
    mid.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    mid.legend(loc="upper left")
    if low is not None:
        t, v = by["kv_usage"]
        low.plot(t, 100 * v, color="tab:purple", label="KV-cache usage")
        low.legend(loc="upper left")
        low.set(ylabel="KV cache (%)")
    axes[-1].set(xlabel="seconds since the run's start")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return _save(fig, out / f"server_state_{index}.png")


def search_goodput(con: duckdb.DuckDBPyConnection, out: Path) -> Path | None:
    """Each search's share of requests meeting the SLO against load, the target as a line, the capacity found
    marked; None without a search."""
    rows = con.execute(
        "SELECT l.run_id, l.endpoint, l.over, list(l.load ORDER BY l.load), list(l.slo_share ORDER BY l.load), "
        "any_value(l.target), any_value(c.highest_passing) FROM trial_loads l JOIN capacity c USING (run_id) "
        "GROUP BY l.run_id, l.endpoint, l.over ORDER BY l.endpoint"
    ).fetchall()
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.6))
    target, over = rows[0][5], rows[0][2]
    for _, endpoint, _, loads, shares, _, capacity in rows:
        measured = [(x, 100 * s) for x, s in zip(loads, shares, strict=True) if s is not None]  # not all warm-up
        line = ax.plot(*zip(*measured, strict=True), marker="o", label=endpoint)[0]
        if capacity is not None:
            ax.axvline(capacity, color=line.get_color(), ls=":", alpha=0.8)
    ax.axhline(100 * target, color="black", ls="--", lw=1, label=f"target {target:.0%}")
    unit = "users" if over == "concurrency" else "requests/s"
    ax.set(
        xscale="log",
        xlabel=f"load ({unit}; dotted: the capacity found)",
        ylabel="requests meeting every SLO (%)",
        title="Capacity search: SLO share against load",
    )
    return _gridded(fig, ax, out / "search_goodput.png")
