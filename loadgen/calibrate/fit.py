"""Fit a twin's step time (spec FittedSpec, hardware/perf.py `fitted_step_s`) from one endpoint's study runs.

- Prefill: a line through the stages one request at a time (`phase: prefill`, and `decode` at batch 1),
  ms = prefill_step + per_token x prompt, weighted by 1/ms so that short prompts count as much as long ones. The
  server's own prompt time (llama.cpp's `timings.prompt_ms`) where it sent one, else the client's TTFT; the gap
  between the two is HTTP and tokenizing, the twin's `request_ms`. One request at a time, a fixed cost per step
  and one per request inside the server cannot be told apart, so `prefill_step_ms` holds both.
- Decode: the step time at each `phase: decode` stage's batch is its median inter-token gap, not its TPOT:
  a closed loop's TPOT also holds the prefills of the requests that replace finished ones, which the twin
  schedules itself. A per-batch table or a line through it, whichever predicts the batches left out better.
- Gathering: requests sent together (a closed loop's users whose answers ended in one step) reach the server
  a fraction of a millisecond apart, and llama.cpp prefills them in one step; the twin's idle engine waits
  `gather_ms` for more before it plans a step: the widest spread of sends the server was seen to prefill
  together (a lower bound of its window). Without it a twin prefills the first alone, and two users who stay in
  step on the server drift apart on the twin (TTFT 40% low at 2 users).
- Each stage is then replayed on the fitted engine (simulate.py), and its TTFT and TPOT p50 set beside the
  measured ones: the fit's residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from loadgen.calibrate.measured import (
    Stage,
    batched_spread_ms,
    cached_any,
    contexts,
    endpoint_spec,
    family,
    lone_hits,
    measured,
    resent_turns,
)
from loadgen.calibrate.simulate import replay
from loadgen.hardware.perf import piecewise
from loadgen.spec.endpoint import Calibration, FittedSpec, PromptCacheSpec


class NotEnough(Exception):
    """The database lacks what the fit needs; the message says which stages to add."""


@dataclass
class Row:
    """One measured stage beside the twin's replay of it."""

    stage: Stage
    ttft_ms: float
    tpot_ms: float | None

    @property
    def ttft_error(self) -> float:
        return self.ttft_ms / self.stage.ttft_ms - 1

    @property
    def tpot_error(self) -> float | None:
        if self.tpot_ms is None or not self.stage.tpot_ms:
            return None
        return self.tpot_ms / self.stage.tpot_ms - 1


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(intercept, slope), least squares in relative error; the intercept never below zero."""
    slope, intercept = np.polyfit(x, y, 1, w=1 / np.maximum(y, 1e-9))
    if intercept < 0:  # through the origin instead
        slope, intercept = float(np.sum(x * y / y**2) / np.sum(x * x / y**2)), 0.0
    return float(intercept), float(slope)


def _loo(xs: np.ndarray, ys: np.ndarray, form: str) -> float | None:
    """Mean relative error predicting each point from the others (None below three points)."""
    if len(xs) < 3:
        return None
    errs = []
    for i in range(len(xs)):
        keep = np.arange(len(xs)) != i
        if form == "table":
            guess = piecewise(float(xs[i]), dict(zip(xs[keep].astype(int).tolist(), ys[keep].tolist(), strict=True)))
        else:
            a, b = _line(xs[keep], ys[keep])
            guess = a + b * xs[i]
        errs.append(abs(guess / ys[i] - 1))
    return float(np.mean(errs))


def prompt_cache(con: duckdb.DuckDBPyConnection, endpoint: str, spec: dict) -> tuple[PromptCacheSpec | None, str]:
    """The twin's prompt cache and a line saying how it was chosen. llama.cpp caches per slot: what a slot keeps
    of a request (its prompt, plus or less `kept_offset`) is the median over the conversation turns that found
    their previous turn (more than half its prompt cached) of cached less that prompt. Another server that
    reported cached tokens: by blocks, as vLLM (16 tokens, vLLM's default: the data cannot tell the size)."""
    if family(spec) == "llamacpp":
        turns = resent_turns(con, endpoint)
        found = [cached - prev for prev, cached in turns if cached > prev / 2]
        if not found:
            return PromptCacheSpec(kind="slots"), (
                "per slot (llama.cpp); no conversation measured, so a slot is assumed to keep its whole prompt "
                "(measure a sessions workload to fit it)"
            )
        offset = int(np.median(found))
        return PromptCacheSpec(kind="slots", kept_offset=offset), (
            f"per slot (llama.cpp): a slot keeps its prompt {offset:+d} tokens (median of {len(found)} "
            f"conversation turns that found their previous turn, of {len(turns)})"
        )
    if cached_any(con, endpoint):
        return PromptCacheSpec(kind="blocks"), "by blocks of 16 tokens (vLLM's automatic prefix caching, assumed)"
    return None, "none: the server reported no prompt tokens reused"


def cache_hit_cost(
    hits: list[tuple[int, int, float]], prefill_step_ms: float, per_token: float
) -> tuple[float, float, str]:
    """(ms, ms per cached token, a line): what a prefill from a cached prefix costs beyond its computed tokens'
    share of the prefill line, a line through the lone such prefills' residuals against their cached tokens (both
    figures at least zero). On the packaged llama.cpp engine it is far from nothing (tens of ms, and more as
    more is cached): restoring the slot's state is work too."""
    if len(hits) < 3:
        return 0.0, 0.0, f"no cost of a cache hit fitted ({len(hits)} lone prefills from a cached prefix, 3 needed)"
    cached = np.array([c for _, c, _ in hits], dtype=float)
    rest = np.array([ms - prefill_step_ms - per_token * n for n, _, ms in hits])
    slope, intercept = np.polyfit(cached, rest, 1) if len(set(cached)) > 1 else (0.0, float(np.mean(rest)))
    if slope < 0:
        slope, intercept = 0.0, float(np.mean(rest))
    if intercept < 0:
        slope, intercept = max(float(np.sum(cached * rest) / np.sum(cached * cached)), 0.0), 0.0
    said = (
        f"a prefill from a cached prefix costs {intercept:.1f} ms + {slope:.3f} ms a cached token more "
        f"({len(hits)} lone ones)"
    )
    return max(float(intercept), 0.0), float(slope), said


def fit(
    con: duckdb.DuckDBPyConnection, endpoint: str, database: str, slots: int | None = None
) -> tuple[FittedSpec, list[Row]]:
    stages = measured(con, endpoint)
    if not stages:
        raise NotEnough(f"no measured requests of endpoint {endpoint!r}")
    # Every stage one request at a time measures a prefill alone: a decode stage's first tokens too.
    prefill = [s for s in stages if s.phase in ("prefill", "decode") and s.batch == 1]
    decode = [s for s in stages if s.phase == "decode" and (s.itl_ms or s.tpot_ms)]
    missing = []
    if len({round(s.prompt) for s in prefill}) < 2:
        missing.append(
            "prefill stages (phase: prefill, concurrency 1, output_tokens 1) at 2 or more prompt lengths, e.g. 64 "
            f"and 1024 tokens (it has {len(prefill)})"
        )
    if len({s.batch for s in decode}) < 2:
        missing.append(
            "decode stages (phase: decode, closed concurrency N) at 2 or more batches, e.g. 1 and 8 "
            f"(it has {len(decode)})"
        )
    spec = endpoint_spec(con, endpoint)
    launch = spec.get("launch") or {}
    slots = slots or launch.get("slots")
    if slots is None:
        missing.append("nothing says the server's slots: give --slots N (llama.cpp's --parallel, vLLM's max_num_seqs)")
    if missing:
        raise NotEnough(f"the database cannot calibrate {endpoint!r}: add " + "; and ".join(missing))

    server = all(s.prefill_ms is not None for s in prefill)
    px = np.array([s.prompt for s in prefill])
    py = np.array([s.prefill_ms if server else s.ttft_ms for s in prefill], dtype=float)
    prefill_step_ms, per_token = _line(px, py)
    request_ms = float(np.median([s.ttft_ms - s.prefill_ms for s in prefill])) if server else 0.0

    by_batch: dict[int, list[float]] = {}
    for s in decode:
        by_batch.setdefault(s.batch, []).append(float(s.itl_ms or s.tpot_ms or 0.0))
    bx = np.array(sorted(by_batch), dtype=float)
    by = np.array([np.median(by_batch[int(b)]) for b in bx])
    loo = {form: _loo(bx, by, form) for form in ("table", "line")}
    # On a tie the line: fewer figures, and it extrapolates as a roofline at fixed context would.
    if loo["line"] is not None and loo["table"] is not None and loo["line"] <= loo["table"] + 1e-9:
        a, b = _line(bx, by)
        table = {int(bx[0]): a + b * bx[0], int(bx[-1]): a + b * bx[-1]}
        form = "line"
    else:
        table = {int(x): float(y) for x, y in zip(bx, by, strict=True)}
        form = "table"
    said = ", ".join(f"{k} {'-' if v is None else f'{v:.1%}'}" for k, v in loo.items())

    ctx = launch.get("ctx")
    gather = batched_spread_ms(con, endpoint)
    cache, cache_said = prompt_cache(con, endpoint, spec)
    hit_ms, hit_per_token, hit_said = cache_hit_cost(lone_hits(con, endpoint), prefill_step_ms, per_token)
    fitted = FittedSpec(
        prefill_ms_per_token=round(per_token, 4),
        prefill_step_ms=round(prefill_step_ms, 3),
        request_ms=round(max(request_ms, 0.0), 3),
        gather_ms=round(gather or 0.0, 2),
        cache_hit_ms=round(hit_ms, 2),
        cache_hit_ms_per_token=round(hit_per_token, 4),
        decode_step_ms={k: round(v, 3) for k, v in table.items()},
        slots=slots,
        batch_tokens=launch.get("batch", 2048),
        kv_tokens=ctx,
        max_context=ctx // slots if ctx else None,  # llama.cpp splits its context among the slots
        prompt_cache=cache,
    )
    rows = [Row(s, *replay(fitted, s)) for s in stages]
    calibration = Calibration(
        database=database,
        endpoint=endpoint,
        run_ids=sorted({s.run_id for s in stages}),
        prompt_tokens=(int(min(s.prompt for s in stages)), int(max(s.prompt for s in stages))),
        batches=(int(min(s.batch for s in stages)), int(max(s.batch for s in stages))),
        contexts=contexts(con, endpoint),
        timings="server" if server else "client",
        decode_form=f"{form} (leave-one-out mean error: {said})",
        prompt_cache=f"{cache_said}; {hit_said}",
        stages=[
            {
                "stage": r.stage.stage,
                "batch": r.stage.batch,
                "prompt_tokens": round(r.stage.prompt),
                "ttft_p50_ms": [round(r.stage.ttft_ms, 2), round(r.ttft_ms, 2)],
                "tpot_p50_ms": None
                if r.tpot_error is None
                else [round(r.stage.tpot_ms or 0, 2), round(r.tpot_ms or 0, 2)],
                "ttft_error": round(r.ttft_error, 4),
                "tpot_error": None if r.tpot_error is None else round(r.tpot_error, 4),
            }
            for r in rows
        ],
    )
    return fitted.model_copy(update={"calibration": calibration}), rows
