"""Would prefill on A and decode on B, over a given network, beat either alone? For which lengths and loads?

One request's E2E on a single platform is TTFT(prompt) + (output - 1) x TPOT(load). Disaggregated, the KV cache
(loadgen.hardware.perf.kv_transfer_s: bytes per token from the model's configuration) crosses the link before
the decode side can continue, so TTFT = TTFT_A(prompt) + transfer and TPOT = TPOT_B(load). Break-evens follow:
- against A alone, disaggregation wins once (output - 1) x (TPOT_A - TPOT_B) > transfer;
- against B alone, once TTFT_B - TTFT_A > transfer.
At a load of N (N concurrent requests: a closed loop of N users, as the study measures batch N) requests move in
lockstep: the N prompts reach the prefill side together and are prefilled together, so TTFT is the prefill of N
prompts' tokens, TTFT(N x prompt) (N x TTFT(prompt) where prefill is linear in tokens, less where batching pays),
then they decode together at batch N. Measured on a real llama.cpp pair (benchmarks/disagg_real.py): 512-token
prompts, TTFT 2.1 s for one user, 8.1 s for four. In lockstep a split pays only where B decodes faster than A
at that batch: each side idles while the other works.
With prefix reuse (a conversation's later turns), a share of each prompt is already in the prefix caches: a side
that keeps one prefills only the rest (TTFT of the shorter prompt: attention over the cached part is left out, so
a lower bound), and when the decode side keeps one, only the rest of the KV cache crosses the link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loadgen.analysis.phases import PhaseModel
from loadgen.hardware.perf import kv_transfer_s
from loadgen.hardware.profiles import ModelConfig


@dataclass
class Link:
    gbps: float
    latency_ms: float = 0.01
    handoff_ms: float = 0.0
    layerwise: bool = False


@dataclass(frozen=True)
class Reuse:
    """The share of each prompt that earlier requests put in the prefix caches, and which sides keep one."""

    share: float = 0.0
    a_caches: bool = True
    b_caches: bool = True


@dataclass
class Prediction:
    prompt: int
    output: int
    gbps: float
    load: int
    e2e_a_ms: float
    e2e_b_ms: float
    ttft_ab_ms: float
    tpot_ab_ms: float
    e2e_ab_ms: float
    transfer_ms: float
    break_even_gbps: float | None  # the slowest link at which A then B still beats both alone (None: never)
    break_even_output: int | None  # the shortest whole output length at which A then B beats A alone here

    @property
    def best_alone_ms(self) -> float:
        return min(self.e2e_a_ms, self.e2e_b_ms)

    @property
    def gain(self) -> float:
        """How much faster A then B finishes than the better platform alone (0.2 = 20% less E2E)."""
        best = self.best_alone_ms
        return 1.0 - self.e2e_ab_ms / best if best > 0 else 0.0  # 0: nothing measured to beat (a 0 ms prediction)


def _e2e(ttft: float, tpot: float, output: int) -> float:
    return ttft + (output - 1) * tpot


def predict(
    a: PhaseModel,
    b: PhaseModel,
    model: ModelConfig,
    prompt: int,
    output: int,
    link: Link,
    load: int = 1,
    reuse: Reuse = Reuse(),
) -> Prediction:
    held_a = reuse.share if reuse.a_caches else 0.0
    held_b = reuse.share if reuse.b_caches else 0.0
    ttft_a, ttft_b = a.ttft(load * prompt * (1 - held_a)), b.ttft(load * prompt * (1 - held_b))  # in lockstep
    tpot_a, tpot_b = a.tpot(load), b.tpot(load)
    prefill_s = ttft_a / 1000.0
    sent = prompt * (1 - held_b)  # the decode side already holds the rest of the KV cache
    transfer = 1000.0 * kv_transfer_s(
        model, sent, link.gbps, link.latency_ms, link.handoff_ms, link.layerwise, prefill_s
    )
    e2e_a, e2e_b = _e2e(ttft_a, tpot_a, output), _e2e(ttft_b, tpot_b, output)
    e2e_ab = _e2e(ttft_a + transfer, tpot_b, output)
    # Break-even link: the transfer time that makes A then B tie the better single platform.
    fixed = link.latency_ms + link.handoff_ms
    room = min(e2e_a, e2e_b) - _e2e(ttft_a, tpot_b, output) - fixed
    wire_bits = sent * model.kv_bytes_per_token * 8
    if link.layerwise:
        wire_bits = wire_bits / model.layers  # at best only the last layer is left after the prefill
    break_gbps = wire_bits / (room / 1000.0) / 1e9 if room > 0 else None
    saving = tpot_a - tpot_b
    # (output - 1) x saving > transfer: the first whole output length past 1 + transfer / saving.
    break_out = math.floor(1 + transfer / saving) + 1 if saving > 0 else None
    return Prediction(
        prompt,
        output,
        link.gbps,
        load,
        e2e_a,
        e2e_b,
        ttft_a + transfer,
        tpot_b,
        e2e_ab,
        transfer,
        break_gbps,
        break_out,
    )


# The length grid predictions cover when no workload gives a mix.
GRID_PROMPTS = (128, 512, 1024, 2048, 3968)
GRID_OUTPUTS = (1, 16, 64, 256, 1024)


def grid() -> list[tuple[int, int]]:
    return [(p, o) for p in GRID_PROMPTS for o in GRID_OUTPUTS]


def where_it_wins(preds: list[Prediction], cases: int) -> str:
    """One line: of `cases` length pairs, where A then B beats both alone (predictions of one link and load)."""
    wins = [p for p in preds if p.gain > 0]
    if not wins:
        return "never"
    outs = sorted({p.output for p in wins})
    prompts = sorted({p.prompt for p in wins})
    best = max(wins, key=lambda p: p.gain)
    return (
        f"{len(wins)} of {cases} length pairs, outputs {outs[0]}-{outs[-1]}, prompts {prompts[0]}-{prompts[-1]}; "
        f"best {best.gain:+.0%} at {best.prompt} in / {best.output} out"
    )
