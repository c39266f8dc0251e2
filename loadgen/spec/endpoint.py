"""The endpoint file's schema: a real OpenAI-compatible server, or the emulator's performance model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from loadgen.spec.workload import Strict

# Server families differ in how they are told to produce exactly max_tokens tokens (see client/openai.py).
Server = Literal["vllm", "sglang", "tgi", "trtllm", "llamacpp", "groq", "openai", "emulator"]


class SimpleModel(Strict):
    """A latency model with no hardware behind it: prefill at a fixed token rate, decode slowing with load.

    The hardware models (GPU continuous batching, GroqRack, disaggregated) are their own engines; this one is
    the minimal stand-in that lets a run work end to end on a laptop.
    """

    kind: Literal["simple"] = "simple"
    overhead_ms: float = Field(default=2.0, ge=0)  # per request, before prefill
    prefill_tokens_per_s: PositiveFloat = 40_000.0
    tpot_ms: float = Field(default=7.3, ge=0)
    tpot_ms_per_running: float = Field(default=0.0, ge=0)  # added per other stream decoding at the same time
    max_context: PositiveInt = 4096


class EndpointSpec(Strict):
    name: str
    url: str | None = None
    model: str = "llama-2-7b"
    server: Server = "vllm"
    api_key_env: str | None = None
    emulate: SimpleModel | None = None

    @model_validator(mode="after")
    def _reachable(self) -> EndpointSpec:
        if self.url is None and self.emulate is None:
            raise ValueError("give 'url' (a real server) or 'emulate' (the built-in emulator's model)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self

    @property
    def emulated(self) -> bool:
        return self.url is None
