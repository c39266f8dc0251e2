"""The workload file's schema (see README "Workload file")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    model_validator,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fixed(Strict):
    dist: Literal["fixed"] = "fixed"
    value: PositiveInt


class Uniform(Strict):
    dist: Literal["uniform"]
    min: PositiveInt
    max: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class Normal(Strict):
    """Normal (or, with dist: lognormal, log-normal) lengths with the given mean and std in tokens, clipped."""

    dist: Literal["normal", "lognormal"]
    mean: PositiveFloat
    std: Annotated[float, Field(ge=0)]
    min: PositiveInt = 1
    max: PositiveInt | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Normal:
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class Choice(Strict):
    dist: Literal["choice"]
    values: Annotated[list[PositiveInt], Field(min_length=1)]
    weights: list[Annotated[float, Field(ge=0)]] | None = None

    @model_validator(mode="after")
    def _weights(self) -> Choice:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(f"weights has {len(self.weights)} entries, values {len(self.values)}")
            if sum(self.weights) <= 0:
                raise ValueError("weights must not all be zero")
        return self


def _number_is_fixed(value: Any) -> Any:
    # A bare number in YAML means a fixed length; bools are ints in Python but never a length.
    if isinstance(value, int) and not isinstance(value, bool):
        return {"dist": "fixed", "value": value}
    return value


LengthSpec = Annotated[
    Fixed | Uniform | Normal | Choice,
    BeforeValidator(_number_is_fixed),
    Field(discriminator="dist"),
]

Arrival = Literal["closed", "constant", "poisson", "gamma", "trace"]


class TraceSpec(Strict):
    path: str
    format: Literal["azure", "mooncake", "burstgpt"] = "azure"
    time_scale: PositiveFloat = 1.0


class LoadSpec(Strict):
    arrival: Arrival = "closed"
    rate: PositiveFloat | None = None
    burstiness: PositiveFloat = 1.0
    concurrency: PositiveInt | None = None
    trace: TraceSpec | None = None

    @model_validator(mode="after")
    def _complete(self) -> LoadSpec:
        if self.arrival in ("constant", "poisson", "gamma") and self.rate is None:
            raise ValueError(f"arrival '{self.arrival}' needs 'rate' (requests per second)")
        if self.arrival == "trace" and self.trace is None:
            raise ValueError("arrival 'trace' needs a 'trace' section with at least 'path'")
        return self

    @property
    def users(self) -> int:
        """Closed loop: the number of users. Open loop: the cap on requests in flight."""
        if self.concurrency is not None:
            return self.concurrency
        return 1 if self.arrival == "closed" else 256


class RequestsSpec(Strict):
    prompt_tokens: LengthSpec = Fixed(value=512)
    output_tokens: LengthSpec = Fixed(value=128)


class StopSpec(Strict):
    requests: PositiveInt | None = None
    duration_s: PositiveFloat | None = None

    @model_validator(mode="after")
    def _bounded(self) -> StopSpec:
        if self.requests is None and self.duration_s is None:
            raise ValueError("give 'requests' or 'duration_s' (or both) so that the run ends by itself")
        return self


class SloSpec(Strict):
    ttft_ms: PositiveFloat | None = None
    tpot_ms: PositiveFloat | None = None
    e2e_ms: PositiveFloat | None = None


class TimeoutSpec(Strict):
    connect_s: PositiveFloat = 10.0
    idle_s: PositiveFloat = 60.0  # longest silence allowed while waiting for the next streamed bytes


class StageSpec(Strict):
    """One resolved stage: the workload's keys with that stage's overrides applied."""

    name: str
    api: Literal["chat", "completions"]
    model: str | None
    load: LoadSpec
    requests: RequestsSpec
    stop: StopSpec
    slo: SloSpec


class WorkloadSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    endpoint: str
    api: Literal["chat", "completions"] = "chat"
    model: str | None = None
    seed: int = 1
    load: LoadSpec = LoadSpec()
    requests: RequestsSpec = RequestsSpec()
    stop: StopSpec = StopSpec(requests=100)
    slo: SloSpec = SloSpec()
    timeouts: TimeoutSpec = TimeoutSpec()
    stages: list[StageSpec] = Field(default_factory=list)
