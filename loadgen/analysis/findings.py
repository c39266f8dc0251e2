"""The seed study's four findings, checked against a results database's phase views.

Each finding is stated in the study's words, measured from the `prefill`, `decode` and `crossover` views (and,
for the fourth, the disaggregation predictions from those views), and judged: does the measurement have the
study's shape? An endpoint's platform (gpu, groq, disaggregated) is its emulator's engine or, for a real server,
its server family (`groq` is Groq's API; vllm, sglang, tgi and trtllm are GPU servers); endpoints of unknown
platform are measured but do not decide a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import orjson

from loadgen.analysis.disagg import Link, grid, predict, where_it_wins
from loadgen.analysis.phases import fit
from loadgen.hardware.profiles import PREFILL_MODES, ModelConfig

GPU_SERVERS = ("vllm", "sglang", "tgi", "trtllm")
PASS_BY_BATCH = 16  # the study: GPUs regain the decode-throughput lead "as batch grows"; the press summary: by 16

STUDY = {
    1: "GPUs have the lowest TTFT (Prefill) at every prompt length",
    2: "the GroqRack has the lowest TPOT (Decode latency) at batch 1",
    3: "the GroqRack decodes the most tokens/s at batch 1, and every GPU passes it as batch grows "
    f"(by {PASS_BY_BATCH})",
    4: "prefill on one platform with decode on another beats both for some lengths and networks",
}


@dataclass(frozen=True)
class Finding:
    n: int
    study: str  # the finding, in the study's words
    measured: str  # what the views say, with the numbers
    short: str  # the outcome in a few words, for a table across variants
    holds: bool | None  # the measurement has the study's shape; None: the platforms needed were not measured


def platforms(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """endpoint -> gpu | groq | disaggregated | unknown, from each run's stored endpoint spec."""
    out: dict[str, str] = {}
    for endpoint, spec in con.execute("SELECT endpoint, spec FROM runs ORDER BY started_at").fetchall():
        ep = orjson.loads(spec).get("endpoint") or {}
        emulate = ep.get("emulate")
        if emulate:
            out[endpoint] = emulate.get("engine", "unknown")
        elif ep.get("server") == "groq":
            out[endpoint] = "groq"
        else:
            out[endpoint] = "gpu" if ep.get("server") in GPU_SERVERS else "unknown"
    return out


def _ms(v: float) -> str:
    return f"{v:,.1f} ms"


def _tps(v: float) -> str:
    return f"{v:,.0f} tok/s"


def _ranges(values: list[int]) -> str:
    return f"{values[0]}" if len(values) == 1 else f"{values[0]}-{values[-1]}"


def _prefill(con: duckdb.DuckDBPyConnection, eps: Sequence[str], kind: dict[str, str]) -> Finding:
    rows = con.execute(
        "SELECT prompt_tokens, endpoint, ttft_p50_ms FROM prefill WHERE endpoint IN (SELECT unnest($1)) "
        "AND batch = (SELECT min(batch) FROM prefill WHERE endpoint IN (SELECT unnest($1))) ORDER BY 1, 3",
        [list(eps)],
    ).fetchall()
    by_prompt: dict[int, list[tuple[str, float]]] = {}
    for prompt, ep, ttft in rows:
        by_prompt.setdefault(prompt, []).append((ep, ttft))
    if not by_prompt:
        return Finding(1, STUDY[1], "no prefill measurements", "not measured", None)
    lines, winners = [], {}
    for prompt, ranked in by_prompt.items():
        winners[prompt] = ranked[0][0]
        lines.append(f"{prompt} tokens: " + ", ".join(f"{ep} {_ms(t)}" for ep, t in ranked))
    gpus = [ep for ep in eps if kind.get(ep) == "gpu"]
    holds = all(kind.get(w) == "gpu" for w in winners.values()) if gpus else None
    by_winner: dict[str, list[int]] = {}
    for prompt, w in winners.items():
        by_winner.setdefault(w, []).append(prompt)
    short = "; ".join(f"{w} at {_ranges(ps)}" for w, ps in by_winner.items())
    return Finding(1, STUDY[1], "lowest TTFT p50, one request at a time: " + "; ".join(lines), short, holds)


def _decode_at_1(con: duckdb.DuckDBPyConnection, eps: Sequence[str]) -> list[tuple[str, float, float]]:
    return con.execute(
        "SELECT endpoint, tpot_p50_ms, decode_tokens_per_s FROM decode "
        "WHERE batch = 1 AND endpoint IN (SELECT unnest($1)) ORDER BY tpot_p50_ms",
        [list(eps)],
    ).fetchall()


def _tpot(con: duckdb.DuckDBPyConnection, eps: Sequence[str], kind: dict[str, str]) -> Finding:
    rows = _decode_at_1(con, eps)
    if not rows:
        return Finding(2, STUDY[2], "no decode measurements at batch 1", "not measured", None)
    winner = rows[0][0]
    groqs = [ep for ep in eps if kind.get(ep) == "groq"]
    holds = kind.get(winner) == "groq" if groqs else None
    measured = "TPOT p50 at batch 1: " + ", ".join(f"{ep} {_ms(t)}" for ep, t, _ in rows)
    return Finding(2, STUDY[2], measured, f"{winner} {_ms(rows[0][1])}", holds)


def _throughput(con: duckdb.DuckDBPyConnection, eps: Sequence[str], kind: dict[str, str]) -> Finding:
    at1 = sorted(_decode_at_1(con, eps), key=lambda r: -(r[2] or 0))
    groqs = [ep for ep, _, _ in at1 if kind.get(ep) == "groq"]
    gpus = [ep for ep in eps if kind.get(ep) == "gpu"]
    if not at1:
        return Finding(3, STUDY[3], "no decode measurements at batch 1", "not measured", None)
    parts = ["decode tokens/s at batch 1: " + ", ".join(f"{ep} {_tps(v or 0)}" for ep, _, v in at1)]
    if not groqs or not gpus:
        return Finding(3, STUDY[3], parts[0], f"{at1[0][0]} highest at batch 1", None)
    groq = groqs[0]
    passes = {}
    for gpu in gpus:
        row = con.execute(
            "SELECT c.decode_passes_at_batch, x.decode_tokens_per_s, y.decode_tokens_per_s FROM crossover c "
            "LEFT JOIN decode x ON x.endpoint = c.endpoint AND x.batch = c.decode_passes_at_batch "
            "LEFT JOIN decode y ON y.endpoint = c.versus AND y.batch = c.decode_passes_at_batch "
            "WHERE c.endpoint = ? AND c.versus = ?",
            [gpu, groq],
        ).fetchone()
        passes[gpu] = row[0] if row else None
        parts.append(
            f"{gpu} passes {groq} at batch {row[0]} ({_tps(row[1])} against {_tps(row[2])})"
            if row and row[0] is not None
            else f"{gpu} never passes {groq} at the batches measured"
        )
    holds = at1[0][0] == groq and all(b is not None and b <= PASS_BY_BATCH for b in passes.values())
    short = ", ".join(f"{g} at {b}" if b is not None else f"{g} never" for g, b in passes.items())
    return Finding(3, STUDY[3], "; ".join(parts), f"{at1[0][0]} highest at 1; passed by {short}", holds)


def _disagg(
    con: duckdb.DuckDBPyConnection,
    pair: tuple[str, str] | None,
    links: Sequence[float],
    model: ModelConfig,
) -> Finding:
    if pair is None:
        return Finding(4, STUDY[4], "no pair of platforms to split prefill and decode across", "no pair", None)
    if pair[0] == pair[1]:
        raise ValueError(f"prefill and decode on the same endpoint {pair[0]!r} is no split")
    try:
        a, b = fit(con, pair[0]), fit(con, pair[1])
    except KeyError as e:
        return Finding(4, STUDY[4], f"no prefill and decode measurements for {e.args[0]}", "not measured", None)
    cases = grid()
    lines, shorts, counts = [], [], []
    for gbps in links:
        preds = [predict(a, b, model, p, o, Link(gbps)) for p, o in cases]
        wins = [p for p in preds if p.gain > 0]
        counts.append(len(wins))
        lines.append(f"{gbps:g} Gb/s: {where_it_wins(preds, len(cases))}")
        best = f", best {max(p.gain for p in wins):+.0%}" if wins else ""
        shorts.append(f"{len(wins)}/{len(cases)} at {gbps:g} Gb/s{best}")
    measured = f"prefill on {pair[0]}, decode on {pair[1]}, one request at a time: " + "; ".join(lines)
    holds = any(counts) and not all(c == len(cases) for c in counts)  # gains under some conditions only
    return Finding(4, STUDY[4], measured, "; ".join(shorts), holds)


def natural_pair(con: duckdb.DuckDBPyConnection, eps: Sequence[str]) -> tuple[str, str] | None:
    """Decode where TPOT at batch 1 is lowest; prefill on the other endpoint with the lowest TTFT at the longest
    prompt (the predictions then say where, if anywhere, the split pays)."""
    dec = _decode_at_1(con, eps)
    if not dec:
        return None
    decode = dec[0][0]
    pre = con.execute(
        "SELECT endpoint FROM prefill WHERE endpoint IN (SELECT unnest($1)) AND endpoint <> $2 "
        "ORDER BY prompt_tokens DESC, batch, ttft_p50_ms LIMIT 1",
        [list(eps), decode],
    ).fetchone()
    return None if pre is None else (pre[0], decode)


def findings(
    con: duckdb.DuckDBPyConnection,
    model: ModelConfig,
    endpoints: Sequence[str] | None = None,
    pair: tuple[str, str] | None = None,
    links: Sequence[float] = (100.0,),
) -> list[Finding]:
    """The four findings over `endpoints` (default: every endpoint in the database). Without `pair`, the fourth
    splits prefill and decode between the winners of the first two, where they differ."""
    kind = platforms(con)
    eps = list(endpoints) if endpoints is not None else list(kind)
    return [
        _prefill(con, eps, kind),
        _tpot(con, eps, kind),
        _throughput(con, eps, kind),
        _disagg(con, pair or natural_pair(con, eps), links, model),
    ]


def by_prefill_mode(
    con: duckdb.DuckDBPyConnection,
    model: ModelConfig,
    pair: tuple[str, str] | None = None,
    links: Sequence[float] = (100.0,),
) -> dict[str | None, list[Finding]]:
    """The findings once per GroqRack prefill mode when the database holds `<endpoint>@<mode>` variants (from
    `loadgen study --prefill-modes`): every other endpoint with that mode's GroqRack. Otherwise {None: findings}.
    A `pair` naming the GroqRack without a mode means each mode's GroqRack in turn."""
    kind = platforms(con)
    variants: dict[str, list[str]] = {}
    for ep, k in kind.items():
        base, _, mode = ep.rpartition("@")
        if k == "groq" and mode in PREFILL_MODES:
            variants.setdefault(mode, []).append(ep)
    if not variants:
        return {None: findings(con, model, pair=pair, links=links)}
    grouped = {ep for eps in variants.values() for ep in eps}
    fixed = [ep for ep in kind if ep not in grouped]
    out: dict[str | None, list[Finding]] = {}
    for mode in (m for m in PREFILL_MODES if m in variants):
        names = {ep.rpartition("@")[0]: ep for ep in variants[mode]}
        mode_pair = (names.get(pair[0], pair[0]), names.get(pair[1], pair[1])) if pair else None
        out[mode] = findings(con, model, [*fixed, *variants[mode]], pair=mode_pair, links=links)
    return out


def verdict(holds: bool | None) -> str:
    return {True: "as the study", False: "NOT as the study", None: "cannot tell"}[holds]
