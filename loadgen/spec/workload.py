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
OptionalLength = Annotated[
    Annotated[Fixed | Uniform | Normal | Choice, Field(discriminator="dist")] | None,
    BeforeValidator(_number_is_fixed),
]

Arrival = Literal["closed", "constant", "poisson", "gamma", "trace"]


# Tokens per `hash_ids` block, as each format's publisher defines them: Mooncake's 512-token blocks
# (kvcache-ai/Mooncake FAST'25 traces), Alibaba Bailian's 16-token blocks (alibaba/qwen-bailian-usagetraces-anon).
BLOCK_TOKENS = {"mooncake": 512, "bailian": 16}


class TraceSpec(Strict):
    """A real trace replayed on its own timestamps: request i is sent at the stage's start + (ts_i - ts_0) /
    time_scale, where ts_0 is the first row replayed. Lengths come from the trace unless `requests` sets them."""

    path: str  # relative to the workload file
    format: Literal["azure", "mooncake", "bailian", "burstgpt"] = "azure"
    block_tokens: PositiveInt | None = None  # tokens per `hash_ids` block; default: the format's (BLOCK_TOKENS)
    time_scale: PositiveFloat = 1.0  # 2.0 replays twice as fast
    start_s: Annotated[float, Field(ge=0)] = 0.0  # window, in trace seconds after the first row
    end_s: PositiveFloat | None = None
    start_row: Annotated[int, Field(ge=0)] = 0  # row range (0 = the first data row), end exclusive
    end_row: PositiveInt | None = None
    sample: Annotated[float, Field(gt=0, le=1)] = 1.0  # keep this share of rows, drawn from the workload's seed
    max_context: PositiveInt | None = 4096  # clip prompt + output to the model's context; null keeps lengths
    on_bad_rows: Literal["fail", "skip"] = "fail"  # fail: exit 2 naming the line; skip: count and report
    models: list[str] | None = None  # burstgpt: keep these models (ChatGPT, GPT-4)
    log_types: list[str] | None = None  # burstgpt: keep these log types
    keep_failed: bool = False  # burstgpt: keep failed requests (Response tokens = 0), sent with one output token

    @property
    def block(self) -> int:
        """Tokens per prompt block of the trace's `hash_ids`."""
        return self.block_tokens or BLOCK_TOKENS.get(self.format, 512)

    @model_validator(mode="after")
    def _ranges(self) -> TraceSpec:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        if self.end_row is not None and self.end_row <= self.start_row:
            raise ValueError(f"end_row ({self.end_row}) must be after start_row ({self.start_row})")
        return self


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


DEFAULT_PROMPT = Fixed(value=512)
DEFAULT_OUTPUT = Fixed(value=128)


class RequestsSpec(Strict):
    """Lengths; unset, they come from the trace (trace arrivals) or are 512 and 128 tokens."""

    prompt_tokens: OptionalLength = None
    output_tokens: OptionalLength = None
    # tokens: token-ID prompts of exact length (completions only); text: words; auto: tokens for completions
    prompt_format: Literal["auto", "tokens", "text"] = "auto"
    # a tokenizer.json (relative to the workload file): exact text prompt lengths, and output tokens counted
    # with it when the server reports no usage
    tokenizer: str | None = None


class StopSpec(Strict):
    requests: PositiveInt | None = None
    duration_s: PositiveFloat | None = None


class SloSpec(Strict):
    ttft_ms: PositiveFloat | None = None
    tpot_ms: PositiveFloat | None = None
    e2e_ms: PositiveFloat | None = None


class TimeoutSpec(Strict):
    connect_s: PositiveFloat = 10.0  # to open the connection
    first_token_s: PositiveFloat | None = None  # from the send to the first output text
    idle_s: PositiveFloat = 60.0  # longest silence allowed while waiting for the next streamed bytes
    total_s: PositiveFloat | None = None  # the whole request
    grace_s: PositiveFloat = 5.0  # after Ctrl-C or SIGTERM, how long requests in flight may still finish


class RetrySpec(Strict):
    """Resending rate-limited requests (HTTP 429); off unless asked for. The row keeps its scheduled time,
    so the wait shows in ttft_sched_ms, and `retries` counts the resends."""

    on_429: bool = False
    max_retries: Annotated[int, Field(ge=0)] = 3
    backoff_s: PositiveFloat = 1.0  # when the server sends no Retry-After: backoff_s x 2^attempt


class WarmupSpec(Strict):
    """Requests sent at the start of each stage that stay in the database but out of `summary`."""

    requests: Annotated[int, Field(ge=0)] = 0


class StageSpec(Strict):
    """One resolved stage: the workload's keys with that stage's overrides applied."""

    name: str
    api: Literal["chat", "completions"]
    model: str | None
    load: LoadSpec
    requests: RequestsSpec
    stop: StopSpec
    slo: SloSpec
    warmup: WarmupSpec = WarmupSpec()
    phase: Literal["prefill", "decode"] | None = None  # what the stage measures, for the study's views

    @model_validator(mode="after")
    def _bounded(self) -> StageSpec:
        if self.load.arrival != "trace" and self.stop.requests is None and self.stop.duration_s is None:
            raise ValueError("stop: give 'requests' or 'duration_s' (or both) so that the stage ends by itself")
        if self.requests.prompt_format == "tokens" and self.api == "chat":
            raise ValueError("requests.prompt_format: token-ID prompts need api: completions")
        return self

    @property
    def text_prompts(self) -> bool:
        fmt = self.requests.prompt_format
        return fmt == "text" or (fmt == "auto" and self.api == "chat")


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
    warmup: WarmupSpec = WarmupSpec()
    phase: Literal["prefill", "decode"] | None = None
    timeouts: TimeoutSpec = TimeoutSpec()
    retry: RetrySpec = RetrySpec()
    stages: list[StageSpec] = Field(default_factory=list)
