"""What a study database measured of one endpoint, per stage: the figures the fit reads."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import orjson


@dataclass
class Stage:
    """A stage of independent requests (a conversation's turns are read apart, by `resent_turns`)."""

    run_id: str
    stage: str
    phase: str | None
    batch: int
    requests: int
    prompt: float  # median prompt tokens
    output: float  # median output tokens
    ttft_ms: float  # client TTFT p50
    tpot_ms: float | None  # client TPOT p50
    prefill_ms: float | None  # the server's own prompt time p50 (None: it sends none)
    itl_ms: float | None  # median gap between streamed tokens


_STAGES = """
SELECT r.run_id, r.stage, any_value(s.phase), any_value(s.concurrency), count(*),
       median(r.prompt_tokens), median(r.output_tokens), median(r.ttft_ms), median(r.tpot_ms),
       median(r.server_prefill_ms),
       (SELECT median(e.itl_ms) FROM events e JOIN requests q USING (run_id, request_id)
         WHERE q.run_id = r.run_id AND q.stage = r.stage AND q.status = 'ok' AND NOT q.warmup)
FROM requests r JOIN runs USING (run_id) LEFT JOIN stages s USING (run_id, stage)
WHERE runs.endpoint = ? AND r.status = 'ok' AND NOT r.warmup AND r.ttft_ms IS NOT NULL AND r.session IS NULL
GROUP BY r.run_id, r.stage ORDER BY min(r.sent_s)
"""


def measured(con: duckdb.DuckDBPyConnection, endpoint: str) -> list[Stage]:
    return [Stage(*row) for row in con.execute(_STAGES, [endpoint]).fetchall()]


_SERVER_TTFT = """
SELECT run_id, t_s, max(value) FILTER (WHERE series = 'ttft_seconds'), max(value) FILTER (WHERE series = 'ttft_count')
FROM server_series JOIN runs USING (run_id)
WHERE runs.endpoint = ? AND series IN ('ttft_seconds', 'ttft_count') GROUP BY run_id, t_s ORDER BY run_id, t_s
"""
_FIRSTS = """
SELECT r.run_id, r.first_token_s, r.ttft_ms, coalesce(r.server_prompt_tokens, r.prompt_tokens),
       r.status = 'ok' AND NOT r.warmup AND s.concurrency = 1
FROM requests r JOIN runs USING (run_id) LEFT JOIN stages s USING (run_id, stage)
WHERE runs.endpoint = ? AND r.first_token_s IS NOT NULL
"""


def http_ms(con: duckdb.DuckDBPyConnection, endpoint: str) -> tuple[float, float] | None:
    """The client's TTFT less the server's own (its TTFT histogram: vLLM's counts from the request's arrival at
    its engine, its prompt tokenized), where the server exports one: the HTTP path and the tokenizing, as a
    fixed part and a part per prompt token (ms, ms a token; the latter 0 where one prompt length was measured).
    Read between consecutive scrapes in which the histogram's count rose by exactly the requests whose first
    token the client got then, all of them sent one at a time (queueing in the client's event loop is none of
    the server's)."""
    try:
        scrapes = con.execute(_SERVER_TTFT, [endpoint]).fetchall()
    except duckdb.CatalogException:  # a database without server metrics
        return None
    firsts: dict[str, list[tuple[float, float, int, bool]]] = {}
    for run_id, first_s, ttft_ms, prompt, alone in con.execute(_FIRSTS, [endpoint]).fetchall():
        firsts.setdefault(run_id, []).append((first_s, ttft_ms, prompt, bool(alone)))
    gaps: list[tuple[float, float]] = []  # (prompt tokens, ms), one per request
    for a, b in zip(scrapes, scrapes[1:], strict=False):
        if a[0] != b[0] or None in (a[2], a[3], b[2], b[3]) or b[3] <= a[3]:
            continue
        got = [(ttft, prompt, alone) for t, ttft, prompt, alone in firsts.get(a[0], []) if a[1] < t <= b[1]]
        if len(got) == round(b[3] - a[3]) and all(alone for *_, alone in got):
            gap = sum(ttft for ttft, *_ in got) / len(got) - (b[2] - a[2]) / (b[3] - a[3]) * 1000
            gaps += [(sum(p for _, p, _ in got) / len(got), gap)] * len(got)
    if not gaps:
        return None
    x, y = np.array(gaps).T
    if np.ptp(x) == 0:
        return float(np.median(y)), 0.0
    per_token, fixed = np.polyfit(x, y, 1)
    return float(fixed), float(per_token)


_FIRST_TOKENS = """
SELECT r.run_id, r.stage, r.sent_s, r.first_token_s, coalesce(r.last_token_s, r.first_token_s)
FROM requests r JOIN runs USING (run_id)
WHERE runs.endpoint = ? AND r.status = 'ok' AND r.first_token_s IS NOT NULL ORDER BY r.run_id, r.stage, r.first_token_s
"""


def batched_spread_ms(con: duckdb.DuckDBPyConnection, endpoint: str, same_step_s: float = 0.002) -> float | None:
    """The widest spread of sends among requests whose first tokens came in one step (within `same_step_s` of
    each other: steps take tens of ms) and whose first send found the server idle (no other request of its stage
    sent before it and ending after it): how far apart requests may reach an idle server and still be prefilled
    together, at least. Requests that queued behind a running step are prefilled together by any batching
    scheduler, the twin's too, and say nothing of a gathering window. None where no such step holds two."""
    rows = con.execute(_FIRST_TOKENS, [endpoint]).fetchall()
    busy: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        busy.setdefault(r[:2], []).append((r[2], r[4]))
    widest = None
    group: list[tuple] = []
    for row in [*rows, None]:
        if row is not None and group and row[:2] == group[-1][:2] and row[3] - group[-1][3] <= same_step_s:
            group.append(row)
            continue
        if len(group) > 1:
            first = min(g[2] for g in group)
            members = {(g[2], g[4]) for g in group}
            # A request that ended in the step before (within same_step_s of the send) left it idle.
            others = [(s, last) for s, last in busy[group[0][:2]] if (s, last) not in members]
            idle = not any(s < first and last > first + same_step_s for s, last in others)
            if idle:
                spread = (max(g[2] for g in group) - first) * 1000
                widest = spread if widest is None else max(widest, spread)
        group = [row]
    return widest


def family(spec: dict) -> str | None:
    """The server family a stored endpoint was (detected, or named), llama.cpp where loadgen launched it."""
    return spec.get("server") or ("llamacpp" if spec.get("launch") else None)


def cache_config(con: duckdb.DuckDBPyConnection, endpoint: str) -> dict | None:
    """The labels of vLLM's `vllm:cache_config_info` as the server's /metrics said them in its latest run (its KV
    cache's num_gpu_blocks and block_size); None where no scrape holds it."""
    try:
        row = con.execute(
            "SELECT m.labels FROM server_metrics m JOIN runs USING (run_id) WHERE runs.endpoint = ? "
            "AND m.name = 'vllm:cache_config_info' ORDER BY runs.started_at DESC, m.t_s DESC LIMIT 1",
            [endpoint],
        ).fetchone()
    except duckdb.CatalogException:  # a database without server metrics
        return None
    return orjson.loads(row[0]) if row and row[0] else None


def endpoint_spec(con: duckdb.DuckDBPyConnection, endpoint: str) -> dict:
    """The endpoint as its latest run stored it (runs.spec)."""
    row = con.execute(
        "SELECT spec FROM runs WHERE endpoint = ? ORDER BY started_at DESC LIMIT 1", [endpoint]
    ).fetchone()
    return (orjson.loads(row[0]).get("endpoint") or {}) if row else {}


_TURNS = """
SELECT coalesce(p.server_prompt_tokens, p.prompt_tokens), r.cached_tokens
FROM requests r JOIN runs USING (run_id) JOIN requests p ON p.run_id = r.run_id AND p.request_id = r.parent_request_id
WHERE runs.endpoint = ? AND r.status = 'ok' AND p.status = 'ok' AND r.cached_tokens IS NOT NULL
"""


def resent_turns(con: duckdb.DuckDBPyConnection, endpoint: str) -> list[tuple[int, int]]:
    """(the previous turn's prompt as the server counted it, the cached tokens the next turn found) for every
    conversation turn that followed another."""
    return [(int(a), int(b)) for a, b in con.execute(_TURNS, [endpoint]).fetchall()]


def cached_any(con: duckdb.DuckDBPyConnection, endpoint: str) -> bool:
    """Whether the server reported any prompt tokens reused."""
    row = con.execute(
        "SELECT count(*) FROM requests r JOIN runs USING (run_id) WHERE runs.endpoint = ? AND r.cached_tokens > 0",
        [endpoint],
    ).fetchone()
    return bool(row and row[0])


_LONE_HITS = """
SELECT coalesce(r.server_prompt_tokens, r.prompt_tokens) - r.cached_tokens, r.cached_tokens, r.server_prefill_ms
FROM requests r JOIN runs USING (run_id)
WHERE runs.endpoint = ? AND r.status = 'ok' AND r.cached_tokens > 0 AND r.server_prefill_ms IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM requests o WHERE o.run_id = r.run_id AND o.request_id <> r.request_id
                  AND o.sent_s < r.first_token_s AND o.end_s > r.sent_s)
"""


def lone_hits(con: duckdb.DuckDBPyConnection, endpoint: str) -> list[tuple[int, int, float]]:
    """(prompt tokens computed, cached, the server's prompt time in ms) of every request that found part of its
    prompt cached and had the server to itself until its first token: its prefill alone, with nothing batched."""
    return [(int(a), int(b), float(c)) for a, b, c in con.execute(_LONE_HITS, [endpoint]).fetchall()]


def contexts(con: duckdb.DuckDBPyConnection, endpoint: str) -> tuple[int, int] | None:
    """The smallest and largest context (prompt as the server counted it, plus answer) of any measured request,
    conversations' turns included."""
    row = con.execute(
        "SELECT min(coalesce(server_prompt_tokens, prompt_tokens) + output_tokens), "
        "max(coalesce(server_prompt_tokens, prompt_tokens) + output_tokens) FROM requests r JOIN runs USING (run_id) "
        "WHERE runs.endpoint = ? AND r.status = 'ok'",
        [endpoint],
    ).fetchone()
    return (int(row[0]), int(row[1])) if row and row[0] is not None else None
