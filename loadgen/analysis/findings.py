"""The seed study's four findings, checked against a results database's phase views.

Each finding is stated in the study's words, measured from the `prefill`, `decode` and `crossover` views (and,
for the fourth, the disaggregation predictions from those views), and judged: does the measurement have the
study's shape? An endpoint's platform (gpu, groq, disaggregated) is its emulator's engine or, for a real server,
its server family (`groq` is Groq's API; vllm, sglang, tgi and trtllm are GPU servers); endpoints of unknown
platform (llama.cpp, which runs on CPUs as well as GPUs, among them) are measured but do not decide a verdict.
The study compares GPUs with a GroqRack: a finding is judged only where both were measured, and otherwise says
what was measured, with no verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import orjson

from loadgen.analysis.disagg import Link, grid, predict, where_it_wins
from loadgen.analysis.phases import fit
from loadgen.hardware.profiles import PREFILL_MODES, ModelConfig, model_profile

GPU_SERVERS = ("vllm", "sglang", "tgi", "trtllm")
PASS_BY_BATCH = 16  # the study: GPUs regain the decode-throughput lead "as batch grows"; the press summary: by 16

STUDY = {
    1: "GPUs have the lowest TTFT (Prefill) at every prompt length",
    2: "the GroqRack has the lowest TPOT (Decode latency) at batch 1",
    3: "the GroqRack decodes the most tokens/s at batch 1, and every GPU passes it as batch grows "
    f"(by {PASS_BY_BATCH})",
    4: "prefill on one platform with decode on another beats both for some lengths and networks",
}


# What each finding measures, in words that claim nothing: the heading where no verdict can be given.
TOPIC = {
    1: "Prefill: TTFT against prompt length, one request at a time",
    2: "Decode latency: TPOT at batch 1",
    3: "Decode throughput against batch",
    4: "Prefill on one endpoint, decode on another",
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


def _both(eps: Sequence[str], kind: dict[str, str]) -> bool:
    """The study's claims compare GPUs with a GroqRack: only a measurement of both can confirm or refute them."""
    measured = {kind.get(ep) for ep in eps}
    return "gpu" in measured and "groq" in measured


def model_of(con: duckdb.DuckDBPyConnection, endpoint: str) -> str | None:
    """The model an endpoint's runs served, as stored (an emulator's profile where the file named none)."""
    row = con.execute(
        "SELECT spec FROM runs WHERE endpoint = ? ORDER BY started_at DESC LIMIT 1", [endpoint]
    ).fetchone()
    ep = orjson.loads(row[0]).get("endpoint") or {} if row else {}
    emulate = ep.get("emulate") or {}
    return ep.get("model") or emulate.get("model")


def pair_model(con: duckdb.DuckDBPyConnection, pair: tuple[str, str]) -> ModelConfig | str:
    """The model profile a split of `pair` moves the KV cache of (its bytes per token), or why there is none."""
    names = {ep: model_of(con, ep) for ep in pair}
    if len(set(names.values())) != 1:
        said = ", ".join(f"{ep} serves {m or 'an unknown model'}" for ep, m in names.items())
        return f"the two sides serve different models ({said})"
    (name,) = set(names.values())
    try:
        return model_profile(name or "")
    except (KeyError, TypeError):
        return (
            f"the KV cache's bytes per token need the model's shape, and loadgen has no profile of "
            f"{name or 'the model served'!r} (profiles: loadgen/hardware/profiles)"
        )


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
    holds = all(kind.get(w) == "gpu" for w in winners.values()) if _both(eps, kind) else None
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
    holds = kind.get(winner) == "groq" if _both(eps, kind) else None
    measured = "TPOT p50 at batch 1: " + ", ".join(f"{ep} {_ms(t)}" for ep, t, _ in rows)
    return Finding(2, STUDY[2], measured, f"{winner} {_ms(rows[0][1])}", holds)


def _scaling(con: duckdb.DuckDBPyConnection, eps: Sequence[str]) -> list[str]:
    """Per endpoint, decode tokens/s and per-user TPOT from its smallest batch to its largest."""
    rows = con.execute(
        "SELECT endpoint, arg_min(batch, batch), arg_min(decode_tokens_per_s, batch), arg_min(tpot_p50_ms, batch), "
        "max(batch), arg_max(decode_tokens_per_s, batch), arg_max(tpot_p50_ms, batch) FROM decode "
        "WHERE endpoint IN (SELECT unnest($1)) GROUP BY 1 HAVING count(*) > 1 ORDER BY 1",
        [list(eps)],
    ).fetchall()
    return [
        f"{ep} {_tps(t0 or 0)} at batch {b0} to {_tps(t1 or 0)} at batch {b1}, TPOT p50 {_ms(p0)} to {_ms(p1)}"
        for ep, b0, t0, p0, b1, t1, p1 in rows
    ]


def _throughput(con: duckdb.DuckDBPyConnection, eps: Sequence[str], kind: dict[str, str]) -> Finding:
    at1 = sorted(_decode_at_1(con, eps), key=lambda r: -(r[2] or 0))
    groqs = [ep for ep, _, _ in at1 if kind.get(ep) == "groq"]
    gpus = [ep for ep in eps if kind.get(ep) == "gpu"]
    if not at1:
        return Finding(3, STUDY[3], "no decode measurements at batch 1", "not measured", None)
    parts = ["decode tokens/s at batch 1: " + ", ".join(f"{ep} {_tps(v or 0)}" for ep, _, v in at1)]
    if not groqs or not gpus:
        parts = (
            ["decode tokens/s and TPOT from the smallest batch to the largest: " + "; ".join(scaled)]
            if (scaled := _scaling(con, eps))
            else parts
        )
        return Finding(3, STUDY[3], "; ".join(parts), f"{at1[0][0]} highest at batch 1", None)
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
    pair: tuple[str, str] | str,
    links: Sequence[float],
    kind: dict[str, str],
) -> Finding:
    if isinstance(pair, str):
        return Finding(4, STUDY[4], pair, "no pair", None)
    if pair[0] == pair[1]:
        raise ValueError(f"prefill and decode on the same endpoint {pair[0]!r} is no split")
    model = pair_model(con, pair)
    if isinstance(model, str):
        return Finding(
            4, STUDY[4], f"prefill on {pair[0]}, decode on {pair[1]}: not predicted: {model}", "no model", None
        )
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
    holds: bool | None = any(counts) and not all(c == len(cases) for c in counts)  # gains under some conditions only
    if sorted(kind.get(ep, "unknown") for ep in pair) != ["gpu", "groq"]:
        holds = None  # the study split a GPU and a GroqRack; another pair is measured, not judged
    return Finding(4, STUDY[4], measured, "; ".join(shorts), holds)


def natural_pair(con: duckdb.DuckDBPyConnection, eps: Sequence[str]) -> tuple[str, str] | str:
    """Decode on the endpoint with the lowest TPOT at batch 1, prefill on the one with the lowest TTFT at the
    longest prompt every endpoint measured one at a time (the predictions then say where, if anywhere, the split
    pays); where one endpoint wins both phases there is nothing to split, and the reason comes back instead."""
    dec = _decode_at_1(con, eps)
    if len({ep for ep, _, _ in dec}) < 2:
        return "no two endpoints measured in Decode at batch 1 to split prefill and decode across"
    decode = dec[0][0]
    pre = con.execute(
        "WITH one AS (SELECT * FROM prefill WHERE endpoint IN (SELECT unnest($1)) AND batch = 1), "
        "common AS (SELECT prompt_tokens FROM one GROUP BY 1 HAVING count(DISTINCT endpoint) = $2) "
        "SELECT endpoint FROM one WHERE prompt_tokens = (SELECT max(prompt_tokens) FROM common) "
        "ORDER BY ttft_p50_ms LIMIT 1",
        [list(eps), len({ep for ep, _, _ in dec})],
    ).fetchone()
    if pre is None:
        return "no prompt length measured one at a time on every endpoint to choose the prefill side by"
    if pre[0] == decode:
        return (
            f"{decode} has both the lowest TTFT at the longest prompt and the lowest TPOT at batch 1: no split to "
            "predict (give --pair PREFILL DECODE to predict one)"
        )
    return (pre[0], decode)


def findings(
    con: duckdb.DuckDBPyConnection,
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
        _disagg(con, pair or natural_pair(con, eps), links, kind),
    ]


def by_prefill_mode(
    con: duckdb.DuckDBPyConnection,
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
        return {None: findings(con, pair=pair, links=links)}
    grouped = {ep for eps in variants.values() for ep in eps}
    fixed = [ep for ep in kind if ep not in grouped]
    out: dict[str | None, list[Finding]] = {}
    for mode in (m for m in PREFILL_MODES if m in variants):
        names = {ep.rpartition("@")[0]: ep for ep in variants[mode]}
        mode_pair = (names.get(pair[0], pair[0]), names.get(pair[1], pair[1])) if pair else None
        out[mode] = findings(con, [*fixed, *variants[mode]], pair=mode_pair, links=links)
    return out


def verdict(holds: bool | None) -> str:
    return {True: "as the study", False: "NOT as the study", None: "cannot tell"}[holds]
