"""Hardware and model profiles: data files with cited figures (profiles/*.yaml), read into pydantic models."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NonNeg = Annotated[float, Field(ge=0)]
PrefillMode = Literal["token-serial", "pipelined", "padded"]  # a GroqRack's prefill (see groqrack-72.yaml)
PREFILL_MODES: tuple[str, ...] = get_args(PrefillMode)
Fraction = Annotated[float, Field(gt=0, le=1)]


class ModelConfig(Strict):
    kind: Literal["model"] = "model"
    name: str
    params: PositiveInt
    layers: PositiveInt
    hidden: PositiveInt
    heads: PositiveInt
    kv_heads: PositiveInt
    ffn: PositiveInt
    vocab: PositiveInt
    dtype_bytes: PositiveInt = 2
    max_context: PositiveInt = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer: layers x KV heads x head size x 2 x dtype bytes (right for GQA too)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes


class GpuHardware(Strict):
    kind: Literal["gpu"] = "gpu"
    name: str
    peak_flops: PositiveFloat
    bandwidth: PositiveFloat  # HBM bytes/s
    memory_bytes: PositiveFloat
    eff_bandwidth: Fraction
    eff_compute: Fraction
    overhead_ms: NonNeg  # per step
    overhead_per_seq_ms: NonNeg = 0.0  # per running sequence per step
    prefill_overhead_ms: NonNeg = 0.0  # per step that holds prefill work (run without CUDA graphs)
    sources: dict[str, str] = Field(default_factory=dict)


class GroqHardware(Strict):
    kind: Literal["groq"] = "groq"
    name: str
    chips: PositiveInt
    sram_bytes_per_chip: PositiveFloat
    peak_flops_per_chip: PositiveFloat
    sram_bandwidth_per_chip: PositiveFloat
    link_bandwidth: PositiveFloat
    efficiency: Fraction
    host_overhead_ms: NonNeg
    hop_latency_us: NonNeg
    prefill_mode: PrefillMode = "token-serial"
    padded_prompt_tokens: PositiveInt = 4096  # padded: the compiled input length every prompt is padded to
    sources: dict[str, str] = Field(default_factory=dict)


KINDS: dict[str, type[Strict]] = {"model": ModelConfig, "gpu": GpuHardware, "groq": GroqHardware}


def profile_names() -> list[str]:
    folder = resources.files("loadgen.hardware") / "profiles"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


@cache
def raw_profile(name: str) -> dict[str, Any]:
    """The profile file's mapping; KeyError names the profiles there are."""
    if name not in profile_names():
        raise KeyError(f"unknown profile {name!r} (have: {', '.join(profile_names())})")
    text = (resources.files("loadgen.hardware") / "profiles" / f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load_profile(name: str, overrides: dict[str, Any] | None = None) -> Strict:
    """A profile by name, with some of its values overridden; raises KeyError or pydantic's ValidationError."""
    data = {**raw_profile(name), **(overrides or {})}
    return KINDS[data["kind"]].model_validate(data)


def model_profile(name: str) -> ModelConfig:
    """A model profile by name; KeyError names the profiles there are, TypeError says it is no model's."""
    cfg = load_profile(name)
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"{name!r} is not a model profile")
    return cfg
