"""How long each piece of work takes on a platform: the hardware performance models, as pure functions.

GPU (a roofline with efficiency factors, as docs/hardware.md's fit): one engine step processes the new tokens of
every sequence in the batch at once,
    step = max(weights / (eff_bw x BW), 2 x params x tokens / (eff_c x peak))        the linear layers
         + causal attention FLOPs of the prefill chunks / (eff_c x peak)             prefill attention
         + KV bytes read by the decoding sequences / (eff_bw x BW)                   decode attention
         + overhead + overhead_per_seq x sequences                                   the serving framework
         + prefill_overhead, in a step that holds prefill work                        eager prefill kernels
GroqRack (an LPU pipeline): the weights are spread over `chips` chips' SRAM and a token passes through every
chip in turn, so one token's latency is chips x (stage compute + hop) + host overhead; a decode step is one
token of one request; prefill is every prompt token through the whole pipeline in turn (token-serial), the
prompt's tokens streamed back to back through the pipeline (pipelined), or, for a graph compiled for a static
input shape, the compiled length streamed whatever the prompt (padded).
Fitted (a twin of a measured server, `loadgen calibrate`): an empirical step, every figure fitted,
    step = decode(sequences decoded)                       piecewise-linear through fitted (batch, ms) points
         + decode_ctx x context tokens of the decoding sequences                      decode attention
         + prefill_step + prefill_per_token x max(prompt tokens, prefill_floor)
           + prefill_pair x causal (query, key) pairs of the prefill chunks, in a step that holds prefill work
         + cache_hit + cache_hit_per_token x cached tokens, per prefill starting in it from a cached prefix
         + prefill_per_completion x (prompts completed in it - 1), where several prompts end in one step
and request_ms per request before it reaches the engine (the server's HTTP and tokenizing: client TTFT less the
server's own prefill time), of which an idle engine spends the last gather_ms gathering arrivals before it plans
a step (requests sent together are prefilled in one step, as llama.cpp does). decode() is a per-batch table
where it predicts the left-out batches better than a line a + b x sequences (the roofline's form at fixed
context), else that line. The prefill's form is chosen the same way, by the mean error predicting each measured
prompt length from the others: a line (prefill_floor 0, prefill_pair 0); the roofline's, whose step costs the
same below prefill_floor tokens (a GPU reads its weights whatever the few tokens: memory-bound) and grows by
prefill_per_token above it (compute-bound); and either with the attention's quadratic term. decode_ctx is fitted
from decode stages at one batch and two or more contexts (a decode stage's context: its prompt plus half its
answer), else 0: on the packaged llama.cpp engine it is small (measured idle: 20.5 -> 24.1 ms at batch 1 from
64 to 1,050 tokens of context, 93.0 -> 101.2 ms at batch 4 from 64 to 536: about 0.004 ms a context token a
sequence, under 2% for chat-sized contexts); on the emulated A100 it is the KV cache's read, 0.49 us a token.
A step either holds prompt chunks beside the decodes (chunked_prefill, as llama.cpp and vLLM V1 batch), or
prefills alone while the decodes wait (prefill-first, vLLM V0's default): the calibration says which it chose
and why. Where the server ends a step before a prompt's last tokens (prompt_tail_tokens; llama.cpp does, to take
context checkpoints for a sliding-window, recurrent or hybrid model: 4 tokens before the end, and a ubatch
before that, checkpoint_ubatch_tokens), a lone prompt is a step per stretch between those stops, each with
its prefill_step (prompt_stops). Each prompt that ends in a step computes its first token's logits; a lone
prefill's step holds one such, and prefill_per_completion is each further one's (on the packaged Gemma, whose
262,144-word output layer costs about a decode step, about 20 ms), fitted from the decode stages' first tokens,
which a closed loop's users prefill together.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from loadgen.hardware.profiles import GpuHardware, GroqHardware, ModelConfig

if TYPE_CHECKING:
    from loadgen.spec.endpoint import FittedSpec


def gpu_step_s(
    hw: GpuHardware, m: ModelConfig, prefill: Sequence[tuple[int, int]], decode_contexts: Sequence[int]
) -> float:
    """One continuous-batching step. `prefill`: (new tokens, tokens already in the KV cache) per prefilling
    sequence; `decode_contexts`: the KV-cache length of each decoding sequence."""
    tokens = sum(n for n, _ in prefill) + len(decode_contexts)
    if tokens == 0:
        return 0.0
    bw, flops = hw.eff_bandwidth * hw.bandwidth, hw.eff_compute * hw.peak_flops
    linear = max(m.weight_bytes / bw, 2.0 * m.params * tokens / flops)
    # QK^T and AV over the causal context: 2 x 2 x hidden FLOPs per (query, key) pair per layer.
    attn_flops = sum(4.0 * m.layers * m.hidden * n * (c + (n + 1) / 2) for n, c in prefill)
    kv_read = (sum(decode_contexts) + sum(c for _, c in prefill)) * m.kv_bytes_per_token
    seqs = len(prefill) + len(decode_contexts)
    overhead = (hw.overhead_ms + hw.overhead_per_seq_ms * seqs + (hw.prefill_overhead_ms if prefill else 0.0)) / 1000.0
    return linear + attn_flops / flops + kv_read / bw + overhead


def piecewise(x: float, points: Mapping[int, float]) -> float:
    """Linear between the points, and beyond the ends along the nearest two (never below zero)."""
    xs = sorted(points)
    if len(xs) == 1:
        return points[xs[0]]
    i = max(min(bisect.bisect_left(xs, x), len(xs) - 1), 1)
    x0, x1 = xs[i - 1], xs[i]
    y0, y1 = points[x0], points[x1]
    return max(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 0.0)


def prompt_stops(prompt: int, tail: int, ubatch: int = 0, lead: int = 0) -> list[int]:
    """Where a prompt's prefill ends a step, in tokens from its start, ascending and ending at the prompt: before
    its last `tail` tokens and `ubatch` tokens before those, where the prompt holds them, and at `lead`, where a
    chat prompt's last user message begins (llama.cpp's server takes a context checkpoint at each, measured from
    its log: a 1,100-token Gemma 3 prompt prefilled as 584, 512 and 4 tokens, a 160-token one as 156 and 4, a
    one-message chat prompt of 184 tokens as 1, 179 and 4)."""
    stops = [prompt]
    if tail and prompt > tail:
        stops.insert(0, prompt - tail)
        if ubatch and prompt - tail > ubatch:
            stops.insert(0, prompt - tail - ubatch)
        if 0 < lead < stops[0]:
            stops.insert(0, lead)
    return stops


def fitted_step_s(
    f: FittedSpec,
    prefill: Sequence[tuple[int, int]],
    decode_contexts: Sequence[int],
    hits: Sequence[int] = (),
    completed: int = 0,
) -> float:
    """One step of a fitted engine (spec FittedSpec's figures). `prefill`: (new tokens, tokens already in the KV
    cache) per prefilling sequence; `decode_contexts`: the KV-cache length of each decoding sequence; `hits`: the
    cached tokens of each prefill that starts in this step from a cached prefix; `completed`: the prompts that
    end in it (each yields a first token)."""
    ms = 0.0
    if decode_contexts:
        ms += piecewise(len(decode_contexts), f.decode_step_ms) + f.decode_ms_per_context_token * sum(decode_contexts)
    tokens = sum(n for n, _ in prefill)
    if tokens:
        pairs = sum(n * (c + (n + 1) / 2) for n, c in prefill)
        ms += (
            f.prefill_step_ms
            + f.prefill_ms_per_token * max(tokens, f.prefill_floor_tokens)
            + f.prefill_ms_per_pair * pairs
        )
    ms += f.cache_hit_ms * len(hits) + f.cache_hit_ms_per_token * sum(hits)
    ms += f.prefill_ms_per_completion * max(completed - 1, 0)
    return ms / 1000.0


def gpu_kv_capacity_tokens(hw: GpuHardware, m: ModelConfig, memory_utilization: float) -> int:
    """Tokens of KV cache that fit beside the weights (vLLM: gpu_memory_utilization x memory - weights)."""
    return max(int((hw.memory_bytes * memory_utilization - m.weight_bytes) // m.kv_bytes_per_token), 0)


def groq_stage_s(hw: GroqHardware, m: ModelConfig) -> float:
    """One token's work on one chip: its share of the FLOPs or of the weight reads from SRAM, whichever is slower."""
    compute = 2.0 * m.params / hw.chips / (hw.efficiency * hw.peak_flops_per_chip)
    sram = m.weight_bytes / hw.chips / (hw.efficiency * hw.sram_bandwidth_per_chip)
    return max(compute, sram)


def groq_hop_s(hw: GroqHardware, m: ModelConfig) -> float:
    """Passing one token's activations to the next chip."""
    return hw.hop_latency_us / 1e6 + m.hidden * m.dtype_bytes / hw.link_bandwidth


def groq_token_s(hw: GroqHardware, m: ModelConfig) -> float:
    """One token through the whole pipeline: the decode step time (TPOT) at batch 1."""
    return hw.chips * (groq_stage_s(hw, m) + groq_hop_s(hw, m)) + hw.host_overhead_ms / 1000.0


def groq_prefill_s(hw: GroqHardware, m: ModelConfig, prompt_tokens: int) -> float:
    """Prefill of one prompt, which also yields its first output token."""
    if hw.prefill_mode == "token-serial":
        return prompt_tokens * groq_token_s(hw, m)
    if hw.prefill_mode == "padded":
        prompt_tokens = hw.padded_prompt_tokens
    # Pipelined: the first token takes the whole pipeline; each further one leaves one stage-and-hop later.
    return groq_token_s(hw, m) + (prompt_tokens - 1) * (
        groq_stage_s(hw, m) + groq_hop_s(hw, m) - hw.hop_latency_us / 1e6
    )


def kv_transfer_s(
    m: ModelConfig,
    prompt_tokens: float,
    gbps: float,
    latency_ms: float,
    handoff_ms: float,
    layerwise: bool,
    prefill_s: float,
) -> float:
    """Time after the prefill ends until the decode side holds the whole KV cache.

    Whole-cache: everything is sent after the prefill. Layer-wise: each layer is sent as soon as it is computed,
    so only what the link could not send during the prefill, and at least the last layer, remains.
    """
    size = prompt_tokens * m.kv_bytes_per_token
    wire = size * 8 / (gbps * 1e9)
    if layerwise:
        wire = max(wire - prefill_s * (m.layers - 1) / m.layers, wire / m.layers)
    return wire + (latency_ms + handoff_ms) / 1000.0
