"""Fit a twin's step time (spec FittedSpec, hardware/perf.py `fitted_step_s`) from one endpoint's study runs.

- Prefill: through the stages one request at a time (`phase: prefill`, and `decode` at batch 1), in relative
  error so that short prompts count as much as long ones, the form that best predicts each prompt length left
  out: a line, ms = prefill_step + per_token x prompt; the roofline's, flat below a floor of tokens (a GPU reads
  its weights whatever the few tokens) and a line above; either with attention's quadratic term (a form with
  k figures competes where k + 2 lengths were measured; the line otherwise). The server's own prompt time
  (llama.cpp's `timings.prompt_ms`) where it sent one, else the client's TTFT; the gap between the two is HTTP
  and tokenizing, the twin's `request_ms`. Where the server sends no per-request timings but a TTFT histogram
  (vLLM's), the HTTP path and tokenizing it leaves out (measured.http_ms: a fixed part and a part per prompt
  token) is taken out of every stage's TTFT: the twin's own server pays its own (a twin of loadgen's emulator
  fitted from client TTFTs paid the emulator's 0.5-1 ms twice, once per step: +7% on a 40 ms TTFT under
  Poisson load). One request at a time, a fixed cost per step and one per request inside the server cannot be
  told apart, so `prefill_step_ms` holds both.
- Decode: the step time at each `phase: decode` stage's batch is its median inter-token gap, not its TPOT:
  a closed loop's TPOT also holds the prefills of the requests that replace finished ones, which the twin
  schedules itself. Where one batch was measured at two contexts or more, the rise per context token a
  sequence (the KV cache's read) is fitted and taken out; else it is 0, said so. Then a per-batch table or a
  line through it, whichever predicts the batches left out better.
- What bounds concurrency, each with where it came from (Calibration.limits): the slots from --slots, the
  launch, or the endpoint file as stored (vLLM's max_num_seqs: its /metrics do not say it); one request at a
  time detected from the decode stages (their first tokens replayed one at a time and batched: a server that
  does not batch queues a closed loop's users behind each other's whole answers); the KV capacity from the
  server's /metrics (vLLM's cache_config_info) or the launch's ctx; the step's token budget.
- The policy, prefill-first or chunked (does a prefill stall the decodes?): from the stages replayed under each
  where they differ by more than 2 points, else as the launch or the stored endpoint file says, else chunked.
  The study's closed loops send each wave together, which both policies replay alike: so far it is read.
- Gathering: requests sent together (a closed loop's users whose answers ended in one step) reach the server
  a fraction of a millisecond apart, and llama.cpp prefills them in one step; the twin's idle engine waits
  `gather_ms` for more before it plans a step: the widest spread of sends an idle server was seen to prefill
  together (a lower bound of its window). Without it a twin prefills the first alone, and two users who stay in
  step on the server drift apart on the twin (TTFT 40% low at 2 users).
- A prompt's last tokens in a step of their own, where the server does so (llama.cpp, for a sliding-window,
  recurrent or hybrid model: the run stores it from the model file, target/gguf.py): a lone prefill beyond them
  is two steps, each with its fixed cost. And each further prompt that ends in a step (its own first token's
  logits): the decode stages' first tokens, whose waves end `batch` prompts together, less their replay.
- Each stage is then replayed on the fitted engine (simulate.py), and its TTFT and TPOT p50 set beside the
  measured ones: the fit's residuals.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import duckdb
import numpy as np

from loadgen.calibrate.measured import (
    Stage,
    batched_spread_ms,
    cache_config,
    cached_any,
    contexts,
    endpoint_spec,
    family,
    http_ms,
    lone_hits,
    measured,
    resent_turns,
)
from loadgen.calibrate.simulate import replay
from loadgen.hardware.perf import piecewise, prompt_stops
from loadgen.spec.endpoint import Calibration, FittedSpec, PromptCacheSpec, Serving
from loadgen.target.gguf import UBATCH

LINE_MISS = 0.05  # the most a decode line may miss a measured batch by and still stand for them


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


# The prefill's candidate forms (perf.fitted_step_s): (whether it has a floor, whether an attention term), its
# figures' count. A form is a candidate where every leave-one-out fit has a point to spare.
PREFILL_FORMS = {"line": (False, False, 2), "line+attention": (False, True, 3), "roofline": (True, False, 3),
                 "roofline+attention": (True, True, 4)}  # fmt: skip


@dataclass
class Prefill:
    form: str
    step_ms: float
    per_token: float
    floor: float = 0.0  # tokens
    per_pair: float = 0.0
    stops: tuple[int, int] = (0, 0)  # FittedSpec.prompt_tail_tokens, checkpoint_ubatch_tokens: a step cost each

    def steps(self, n: np.ndarray | float, context: int = 0) -> np.ndarray | float:
        return _steps(n, self.stops, context)

    def ms(self, p: np.ndarray | float) -> np.ndarray | float:
        # The split's steps hold the same causal pairs as one, p(p+1)/2.
        pairs = self.per_pair * p * (p + 1) / 2
        return self.step_ms * self.steps(p) + self.per_token * np.maximum(p, self.floor) + pairs

    def at(self, n: int, context: int) -> float:
        """A prompt's `n` tokens computed after `context` already in the cache (perf.fitted_step_s's pairs)."""
        pairs = self.per_pair * n * (context + (n + 1) / 2)
        return float(self.step_ms * self.steps(n, context) + self.per_token * max(n, self.floor) + pairs)


def _steps(n: np.ndarray | float, stops: tuple[int, int], context: int = 0) -> np.ndarray | float:
    """The steps a lone prompt's `n` tokens after `context` cached take: one per stretch between the places
    where the server ends a step (perf.prompt_stops)."""
    if not stops[0]:
        return 1.0

    def count(k: float) -> float:
        return float(sum(1 for s in prompt_stops(int(k) + context, *stops) if s > context))

    return np.vectorize(count, otypes=[float])(n) if np.ndim(n) else count(float(n))


def _nonneg(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares in relative error with every figure at or above zero (a negative one is dropped, and the
    rest refitted)."""
    w = 1 / np.maximum(y, 1e-9)
    cols = list(range(a.shape[1]))
    while True:
        coef = np.zeros(a.shape[1])
        if cols:
            coef[cols] = np.linalg.lstsq(a[:, cols] * w[:, None], y * w, rcond=None)[0]
        if (coef >= 0).all():
            return coef
        cols.remove(int(np.argmin(coef)))


def _prefill_fit(px: np.ndarray, py: np.ndarray, form: str, stops: tuple[int, int]) -> Prefill:
    floor, attention, _ = PREFILL_FORMS[form]
    if form == "line" and not stops[0]:
        return Prefill(form, *_line(px, py))
    steps = _steps(px, stops) * np.ones_like(px)
    pairs = px * (px + 1) / 2 if attention else np.zeros_like(px)
    knees = np.geomspace(px.min(), px.max(), 48) if floor else [0.0]
    best: tuple[float, Prefill] | None = None
    for k in knees:
        c = _nonneg(np.column_stack([steps, np.maximum(px, k), pairs]), py)
        f = Prefill(form, float(c[0]), float(c[1]), float(k), float(c[2]), stops)
        err = float(np.sum((f.ms(px) / py - 1) ** 2))
        if best is None or err < best[0] - 1e-12:
            best = (err, f)
    assert best is not None
    return best[1]


def _prefill(
    px: np.ndarray, py: np.ndarray, stops: tuple[int, int] = (0, 0)
) -> tuple[Prefill, dict[str, float | None]]:
    """The form that best predicts each measured prompt length from the others; on a tie (within 0.1 point)
    the one with fewer figures, and the line where too few lengths were measured to tell."""
    loo: dict[str, float | None] = {}
    for form, (_, _, k) in PREFILL_FORMS.items():
        if len(set(px.tolist())) < k + 2:
            loo[form] = None
            continue
        errs = []
        for i in range(len(px)):
            keep = np.arange(len(px)) != i
            errs.append(abs(float(_prefill_fit(px[keep], py[keep], form, stops).ms(px[i])) / py[i] - 1))
        loo[form] = float(np.mean(errs))
    chosen = "line"
    for form, err in loo.items():  # in order of figures: a later form must do better by more than 0.1 point
        ref = loo[chosen]
        if err is not None and (ref is None or err < ref - 0.001):
            chosen = form
    return _prefill_fit(px, py, chosen, stops), loo


def _context(decode: list[Stage]) -> tuple[float, str]:
    """ms per context token of each decoding sequence, from stages at one batch and two or more contexts (a
    stage's context: its prompt plus half its answer): the step's rise over the contexts' rise at that batch,
    pooled over such batches. 0 where none was measured, and said so."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for s in decode:
        groups.setdefault(s.batch, []).append((s.batch * (s.prompt + s.output / 2), float(s.itl_ms or s.tpot_ms or 0)))
    num = den = 0.0
    used = []
    for b, pts in groups.items():
        x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        if len(pts) < 2 or x.max() < 1.2 * x.min():
            continue
        num += float(np.sum((x - x.mean()) * (y - y.mean())))
        den += float(np.sum((x - x.mean()) ** 2))
        used.append(f"batch {b} at {', '.join(f'{v / b:.0f}' for v in sorted(set(x.tolist())))} tokens")
    if not used:
        return 0.0, (
            "0: no batch was measured at two contexts (add a decode stage at a measured batch with longer prompts,"
            " e.g. batch 8 with 1024-token prompts)"
        )
    c = max(num / den, 0.0) if den else 0.0
    return c, f"{c:.6f} ms a context token a sequence, from decode at {'; '.join(used)}"


def _mean_error(rows: list[Row]) -> float:
    errs = [abs(r.ttft_error) for r in rows] + [abs(e) for r in rows if (e := r.tpot_error) is not None]
    return float(np.mean(errs)) if errs else 0.0


def _limits(con: duckdb.DuckDBPyConnection, endpoint: str, spec: dict, slots: int | None) -> dict:
    """What bounds the twin's concurrency, and where each figure came from: the slots, the KV capacity, the
    step's token budget, the context per request and the batching policy, as far as the database, the server
    or the option say."""
    launch = spec.get("launch") or {}
    said = spec.get("limits") or {}  # what the server's own account said (target/identify.py)
    emulate = spec.get("emulate") or {}
    serving = Serving.model_validate(emulate.get("serving") or {}) if emulate.get("engine") == "gpu" else None
    out: dict = {
        # llama.cpp splits its context among the slots, but for a unified KV buffer, which any slot may fill
        "said": [], "slots": None, "kv": None, "chunked": None, "batch_tokens": 2048,
        "per_slot": bool(launch) and not launch.get("kv_unified"),
        "tail": 0, "ubatch": 0,
    }  # fmt: skip
    if slots:
        out["slots"], where = slots, "--slots"
    elif launch.get("slots"):
        out["slots"], where = launch["slots"], "the launch (llama.cpp's --parallel)"
    elif said.get("slots"):
        out["slots"], where = said["slots"], "the server's GET /props (total_slots)"
    elif serving is not None:
        out["slots"], where = (
            serving.max_num_seqs,
            "the endpoint file as stored (max_num_seqs: vLLM's /metrics do not say it)",
        )
    if out["slots"]:
        out["said"].append(f"slots {out['slots']} from {where}")
    cache = cache_config(con, endpoint)
    if cache and cache.get("num_gpu_blocks") and cache.get("block_size"):
        blocks, size = int(float(cache["num_gpu_blocks"])), int(float(cache["block_size"]))
        out["kv"] = blocks * size
        out["said"].append(
            f"KV {out['kv']} tokens from the server's /metrics (vllm:cache_config_info: {blocks} blocks of {size})"
        )
    elif launch.get("ctx"):
        out["kv"] = launch["ctx"]
        out["said"].append(f"KV {out['kv']} tokens from the launch (llama.cpp's --ctx-size)")
    elif said.get("ctx_per_slot") and out["slots"]:
        out["kv"], out["per_slot"] = said["ctx_per_slot"] * out["slots"], True
        out["said"].append(
            f"KV {out['kv']} tokens from the server's GET /props ({said['ctx_per_slot']} a slot, n_ctx; a server "
            "with a unified KV buffer, --kv-unified, says the whole of it a slot: give --slots 1 or its endpoint file)"
        )
    else:
        out["said"].append("KV unbounded: nothing says it")
    if spec.get("server") == "llamacpp" or emulate.get("server") == "llamacpp":
        out["chunked"] = (True, "llama.cpp batches prompt chunks with the decodes")
    if launch:
        out["batch_tokens"] = launch.get("batch", 2048)
        out["chunked"] = (True, "llama.cpp batches prompt chunks with the decodes")
        out["said"].append(f"{out['batch_tokens']} tokens a step from the launch (--batch-size)")
    elif serving is not None:
        out["batch_tokens"] = serving.max_num_batched_tokens
        out["chunked"] = (serving.chunked_prefill, "the endpoint file as stored (chunked_prefill)")
        out["said"].append(
            f"{out['batch_tokens']} tokens a step from the endpoint file as stored (max_num_batched_tokens)"
        )
    else:
        out["said"].append("2048 tokens a step: nothing says it")
    fitted = emulate.get("fitted") or {}
    if "prompt_tail" in said:
        out["tail"] = said["prompt_tail"]
        # llama.cpp's second checkpoint is a ubatch before the tail: --ubatch-size, 512 unless the launch says
        out["ubatch"] = min(launch.get("batch", UBATCH), UBATCH) if out["tail"] else 0
        where = (spec.get("detected") or {}).get("prompt_tail", "the server")
        apart = (
            f"a prompt's last {out['tail']} tokens prefilled apart, and a step ending {out['ubatch']} tokens "
            "before them (llama.cpp's context checkpoints at its --ubatch-size)"
            if out["tail"]
            else "no prompt tokens apart"
        )
        out["said"].append(f"{apart}, from {where}")
    elif fitted.get("prompt_tail_tokens"):
        out["tail"] = fitted["prompt_tail_tokens"]
        out["ubatch"] = fitted.get("checkpoint_ubatch_tokens", 0)
        out["said"].append(
            f"a prompt's last {out['tail']} tokens prefilled apart (and {out['ubatch']} before them), from the "
            "endpoint file as stored"
        )
    return out


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


def _completions(fitted: FittedSpec, batched: list[Stage]) -> tuple[FittedSpec, str]:
    """The twin with what each prompt beyond the first that ends in a step costs (its own first token's logits),
    and a line: the median over the decode stages above batch 1 of their first tokens' residual per such prompt
    (a closed loop's users are prefilled together, so each of their waves ends `batch` prompts in one step)."""
    if fitted.slots == 1 or not batched:
        return fitted, "no prompts measured ending together"
    per = [(s.ttft_ms - replay(fitted, s)[0]) / (s.batch - 1) for s in batched]
    ms = max(float(np.median(per)), 0.0)
    said = f"each further prompt ending in a step {ms:.1f} ms (median over {len(per)} decode stages' first tokens)"
    return fitted.model_copy(update={"prefill_ms_per_completion": round(ms, 3)}), said


def cache_hit_cost(hits: list[tuple[int, int, float]], pf: Prefill) -> tuple[float, float, str]:
    """(ms, ms per cached token, a line): what a prefill from a cached prefix costs beyond what the fitted
    prefill predicts for its computed tokens at that context: a line through the lone such prefills' residuals
    against their cached tokens (both figures at least zero). On the packaged llama.cpp engine it is far from
    nothing (tens of ms, and more as more is cached): restoring the slot's state is work too."""
    if len(hits) < 3:
        return 0.0, 0.0, f"no cost of a cache hit fitted ({len(hits)} lone prefills from a cached prefix, 3 needed)"
    cached = np.array([c for _, c, _ in hits], dtype=float)
    rest = np.array([ms - pf.at(n, c) for n, c, ms in hits])
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
    http = None if all(s.prefill_ms is not None for s in stages if s.batch == 1) else http_ms(con, endpoint)
    if http is not None:  # the server's own TTFT: the twin's server adds its own HTTP path and tokenizing
        stages = [replace(s, ttft_ms=s.ttft_ms - http[0] - http[1] * s.prompt) for s in stages]
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
    spec = endpoint_spec(con, endpoint)  # the endpoint as its latest run stored it
    limits = _limits(con, endpoint, spec, slots)
    if missing and limits["slots"] is None:
        missing.append(
            "nothing says the server's slots: give --slots N (llama.cpp's --parallel, vLLM's max_num_seqs), or "
            "measure decode at batches above 1 (a server that serves one request at a time is told from them)"
        )
    if missing:
        raise NotEnough(f"the database cannot calibrate {endpoint!r}: add " + "; and ".join(missing))

    server = all(s.prefill_ms is not None for s in prefill)
    px = np.array([s.prompt for s in prefill], dtype=float)
    py = np.array([s.prefill_ms if server else s.ttft_ms for s in prefill], dtype=float)
    pf, prefill_loo = _prefill(px, py, (limits["tail"], limits["ubatch"]))
    request_ms = float(np.median([s.ttft_ms - s.prefill_ms for s in prefill])) if server else 0.0

    per_context, context_said = _context(decode)
    by_batch: dict[int, list[float]] = {}
    for s in decode:  # the step at no context: the context term taken out
        itl = float(s.itl_ms or s.tpot_ms or 0.0) - per_context * s.batch * (s.prompt + s.output / 2)
        by_batch.setdefault(s.batch, []).append(itl)
    bx = np.array(sorted(by_batch), dtype=float)
    by = np.array([np.median(by_batch[int(b)]) for b in bx])
    loo = {form: _loo(bx, by, form) for form in ("table", "line")}
    a, b = _line(bx, by)
    # The line where it predicts the batches left out as well as the table (fewer figures, and it extrapolates
    # as a roofline at fixed context would) and misses no measured batch by more than LINE_MISS; else the table,
    # which is every measured batch's own step (llama.cpp on one thread is no line: an odd batch costs more than
    # the next even one, 87, 68, 106, 86, 127 and 100 ms at 3 to 8 sequences).
    line_miss = float(np.max(np.abs((a + b * bx) / by - 1)))
    if (
        loo["line"] is not None
        and loo["table"] is not None
        and loo["line"] <= loo["table"] + 1e-9
        and line_miss <= LINE_MISS
    ):
        table = {int(bx[0]): a + b * bx[0], int(bx[-1]): a + b * bx[-1]}
        form = "line"
    else:
        table = {int(x): float(y) for x, y in zip(bx, by, strict=True)}
        form = "table"

    def said(loo: dict[str, float | None]) -> str:
        return ", ".join(f"{k} {'-' if v is None else f'{v:.1%}'}" for k, v in loo.items())

    ctx = limits["kv"]
    gather = batched_spread_ms(con, endpoint)
    cache, cache_said = prompt_cache(con, endpoint, spec)
    hit_ms, hit_per_token, hit_said = cache_hit_cost(lone_hits(con, endpoint), pf)
    fitted = FittedSpec(
        prefill_ms_per_token=round(pf.per_token, 5),
        prefill_step_ms=round(pf.step_ms, 3),
        prefill_floor_tokens=round(pf.floor),
        prefill_ms_per_pair=round(pf.per_pair, 10),
        decode_ms_per_context_token=round(per_context, 7),
        request_ms=round(max(request_ms, 0.0), 3),
        gather_ms=round(gather or 0.0, 2),
        cache_hit_ms=round(hit_ms, 2),
        cache_hit_ms_per_token=round(hit_per_token, 4),
        decode_step_ms={k: round(v, 3) for k, v in table.items()},
        slots=limits["slots"] or max(s.batch for s in stages),
        batch_tokens=limits["batch_tokens"],
        kv_tokens=ctx,
        # llama.cpp splits its context among the slots
        max_context=ctx // limits["slots"] if ctx and limits["slots"] and limits["per_slot"] else None,
        chunked_prefill=True,
        prompt_tail_tokens=limits["tail"],
        checkpoint_ubatch_tokens=limits["ubatch"],
        prompt_cache=cache,
    )

    # One request at a time, or batched: the decode stages' first tokens tell (a server that does not batch
    # queues a closed loop's users behind each other's whole answers; one that does prefills them together).
    batched = [s for s in decode if s.batch > 1]
    alone = together = None
    if batched:
        alone = _mean_error([Row(s, *replay(fitted.model_copy(update={"slots": 1}), s)) for s in batched])
        together = _mean_error([Row(s, *replay(fitted, s)) for s in batched])
    one_at_a_time = alone is not None and together is not None and alone < together / 2 and alone + 0.05 < together
    if one_at_a_time:
        fitted = fitted.model_copy(update={"slots": 1, "max_context": None})
        limits["said"][:0] = [
            f"slots 1 detected: the decode stages' first tokens as one request at a time (mean error {alone:.1%}) "
            f"better than batched (mean error {together:.1%})"
        ]
        limits["said"] = [x for x in limits["said"] if not x.startswith(f"slots {limits['slots']} from")]
    elif limits["slots"] is None:
        raise NotEnough(
            f"the database cannot calibrate {endpoint!r}: its decode stages show batching, and nothing says the "
            "server's slots: give --slots N (llama.cpp's --parallel, vLLM's max_num_seqs)"
        )

    # The policy: prefill-first or chunked, as the stages replayed under each tell where they differ.
    rows = {
        c: [Row(s, *replay(fitted.model_copy(update={"chunked_prefill": c}), s)) for s in stages] for c in (True, False)
    }
    errs = {c: _mean_error(r) for c, r in rows.items()}
    name = {
        True: "chunked prefill (prompt chunks beside the decodes)",
        False: "prefill-first (a prefill stalls the decodes)",
    }
    if fitted.slots == 1:
        chunked, why = True, "one request at a time: no decodes to stall"
    elif abs(errs[True] - errs[False]) > 0.02:
        chunked = errs[True] < errs[False]
        why = f"the stages replayed under each: mean error {errs[True]:.1%} chunked, {errs[False]:.1%} prefill-first"
    elif limits["chunked"] is not None:
        chunked, why = (
            limits["chunked"][0],
            (
                f"{limits['chunked'][1]}; the stages do not tell (mean error {errs[True]:.1%} chunked, "
                f"{errs[False]:.1%} prefill-first)"
            ),
        )
    else:
        chunked, why = (
            True,
            (
                f"assumed: the stages do not tell (mean error {errs[True]:.1%} chunked, {errs[False]:.1%} "
                "prefill-first) and nothing says it"
            ),
        )
    fitted = fitted.model_copy(update={"chunked_prefill": chunked})
    fitted, completions_said = _completions(fitted, batched)
    final = [Row(s, *replay(fitted, s)) for s in stages]
    calibration = Calibration(
        database=database,
        endpoint=endpoint,
        run_ids=sorted({s.run_id for s in stages}),
        prompt_tokens=(int(min(s.prompt for s in stages)), int(max(s.prompt for s in stages))),
        batches=(int(min(s.batch for s in stages)), int(max(s.batch for s in stages))),
        contexts=contexts(con, endpoint),
        timings="server" if server else "client",
        http_ms=None if http is None else (round(http[0], 3), round(http[1], 6)),
        decode_form=f"{form} (leave-one-out mean error: {said(loo)}; the line misses a batch by {line_miss:.1%})",
        prefill_form=f"{pf.form} (leave-one-out mean error: {said(prefill_loo)}); {completions_said}",
        decode_context=context_said,
        limits="; ".join(limits["said"]),
        policy=f"{name[chunked]}: {why}",
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
            for r in final
        ],
    )
    return fitted.model_copy(update={"calibration": calibration}), final
