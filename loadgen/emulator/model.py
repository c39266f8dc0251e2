"""Timing models. A model decides when a request's first token and each later token are released."""

from __future__ import annotations

from loadgen.spec.endpoint import SimpleModel


class SimpleTiming:
    """Prefill at a fixed token rate; each decode step slows by a fixed amount per other running stream."""

    def __init__(self, spec: SimpleModel):
        self.spec = spec
        self.running = 0  # requests between arrival and their last token

    def prefill_s(self, prompt_tokens: int) -> float:
        s = self.spec
        return (s.overhead_ms / 1000.0) + prompt_tokens / s.prefill_tokens_per_s

    def step_s(self) -> float:
        s = self.spec
        return (s.tpot_ms + s.tpot_ms_per_running * max(self.running - 1, 0)) / 1000.0
