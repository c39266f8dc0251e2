"""The one definition of each per-request metric. The database stores these values; SQL views only aggregate.

ttft_ms = first_token - sent; tpot_ms = (last_token - first_token) / (output_tokens - 1), NULL below 2 tokens;
e2e_ms = end - sent; lag_ms = sent - scheduled (NULL for a request never sent); ttft_sched_ms = first_token -
scheduled (what a user waiting since the scheduled time saw, so that a send held back by the in-flight cap is not
hidden);
itl_ms (per streamed event, table events) = this event's time - the previous event's of the same request, NULL for
its first: vLLM's benchmark definition; a server that packs several tokens into one event shows fewer, longer
gaps (TPOT is per token);
slo_ok: ok status and every SLO the workload sets is met (a TPOT SLO is vacuous for one-token outputs).
A request the workload abandoned (`requests.cancel`: status `cancelled`) keeps its timestamps and the tokens it
got, but counts in no latency or token aggregate, and in no SLO share: it is never good (goodput_rps counts the
requests meeting every SLO), and slo_share and a search's pass are over the requests the workload let finish,
as an abandon planned by the workload says nothing of the server. The summary counts them (`cancelled`), apart
from errors; a user who gave up waiting for a first token (`before_first_token`) shows there too.
A reasoning model streams its thinking before its answer (client/openai.py says where each server puts it):
every token counts in ttft_ms and tpot_ms, thinking included (the first token of any kind; usage counts both);
answer_ttft_ms = the answer's first event - sent (ttft_ms where nothing was thought); reasoning_tpot_ms = (last
thinking event - first_token) / (reasoning_tokens - 1) and answer_tpot_ms = (last_token - the answer's first
event) / (answer tokens - 1), each phase's own decode rate, NULL below 2 tokens in it (answer tokens: output_tokens
- reasoning_tokens).

The phase throughputs aggregate these timestamps over a batch (a stage of phase prefill or decode, ok requests
outside warm-up), each over the time the batch spent in that phase, so that neither phase's time dilutes the other:
    decode_tokens_per_s  = sum(output_tokens - 1) / |union of [first_token, last_token]|   (requests of >= 2 tokens)
    prefill_tokens_per_s = sum(prompt_tokens) / |union of [sent, first_token]|
where |union| is the total length of the time covered by at least one window. A server that times its own
prefills (llama.cpp's timings.prompt_ms) shows when a decode step waited on another request's prompt: the decode
union leaves out each [first_token - server_prefill_ms, first_token], so a batch's decode throughput is what its
decode steps give, as a decode engine that never prefills (a split's decode side) has it. Not batch / TPOT, which
is wrong wherever requests do not decode together (a GroqRack serves one at a time: its union is the sum of the
windows).
`stage_tokens_per_s` is the stage's output tokens over its whole span (first send to last end), prefills
included. The one implementation of the union is `_busy` in store/schema.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadgen.results import RequestResult
from loadgen.spec.workload import SloSpec


@dataclass(frozen=True, slots=True)
class Derived:
    lag_ms: float | None
    ttft_ms: float | None
    ttft_sched_ms: float | None
    tpot_ms: float | None
    e2e_ms: float | None
    slo_ok: bool
    answer_ttft_ms: float | None = None
    reasoning_tpot_ms: float | None = None
    answer_tpot_ms: float | None = None


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (a - b) * 1000.0


def _per_token(first: float | None, last: float | None, n: int) -> float | None:
    return (last - first) * 1000.0 / (n - 1) if first is not None and last is not None and n >= 2 else None


def derive(r: RequestResult, slo: SloSpec) -> Derived:
    first, last = r.first_token_s, r.last_token_s
    n = r.output_tokens
    tpot = _per_token(first, last, n)
    thought = r.reasoning_tokens or 0
    answer_first = r.answer_first_s
    last_thought = r.event_times[r.reasoning_events - 1] if r.reasoning_events else None
    ttft, e2e = _ms(first, r.sent_s), _ms(r.end_s, r.sent_s)
    ok = r.status == "ok" and ttft is not None
    if slo.ttft_ms is not None and (ttft is None or ttft > slo.ttft_ms):
        ok = False
    if slo.e2e_ms is not None and (e2e is None or e2e > slo.e2e_ms):
        ok = False
    answer_ttft = _ms(answer_first, r.sent_s)
    if slo.answer_ttft_ms is not None and (answer_ttft is None or answer_ttft > slo.answer_ttft_ms):
        ok = False
    if slo.tpot_ms is not None and tpot is not None and tpot > slo.tpot_ms:  # one token: no decode to judge
        ok = False
    return Derived(
        lag_ms=_ms(r.sent_s, r.scheduled_s),
        ttft_ms=ttft,
        ttft_sched_ms=_ms(first, r.scheduled_s),
        tpot_ms=tpot,
        e2e_ms=e2e,
        slo_ok=ok,
        answer_ttft_ms=answer_ttft,
        reasoning_tpot_ms=_per_token(first, last_thought, thought),
        answer_tpot_ms=_per_token(answer_first, last, n - thought),
    )


def itl_ms(t_s: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Inter-token latency of a batch of events, requests one after another (`idx` restarts at 0 for each):
    the gap since the previous event of the same request in ms; NaN for each request's first event."""
    gaps = np.full(len(t_s), np.nan)
    gaps[1:] = np.diff(t_s) * 1000.0
    gaps[idx == 0] = np.nan
    return gaps
