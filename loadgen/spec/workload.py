"""The workload file's schema (docs/workloads.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from loadgen.spec.distributions import (
    Fixed,
    LengthSpec,
    OptionalLength,
    OptionalSeconds,
    Seconds,
    SecondsSpec,
    Strict,
)
from loadgen.spec.tasks import TasksSpec

Arrival = Literal["closed", "constant", "poisson", "gamma", "trace"]


class SystemPromptsSpec(Strict):
    """System prompts that sessions share: `count` distinct ones, each `tokens` long (drawn once per prompt)."""

    count: Annotated[int, Field(ge=0)] = 0  # 0: sessions have no system prompt
    tokens: LengthSpec = Fixed(value=512)
    pick: Literal["uniform", "zipf"] = "uniform"  # zipf: the i-th (from 1) is picked with weight 1/i


class SessionsSpec(Strict):
    """Multi-turn conversations: each turn resends the conversation so far (the system prompt, every earlier
    user message and the answer the server returned to it), then a new user message."""

    turns: LengthSpec = Fixed(value=4)  # turns per session
    think_s: SecondsSpec = Seconds(value=0.0)  # from a turn's answer to the next turn's send
    user_tokens: LengthSpec = Fixed(value=128)  # the new user message of each turn
    output_tokens: LengthSpec = Fixed(value=128)  # each turn's answer (max_tokens)
    system_prompts: SystemPromptsSpec = SystemPromptsSpec()
    max_context: PositiveInt = 4096  # prompt + output tokens a turn may use (the model's context)
    at_context_limit: Literal["end", "truncate"] = "end"  # end the session, or drop its oldest turns
    steady_state: bool = False  # start with sessions already partway through (docs/sessions.md)


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
    # mooncake: `prefix` infers each request's parent, the latest earlier one whose prompt and answer its prompt
    # extends (a tool agent's next call), and sends it only once that one has ended (loadgen/trace/follows.py)
    dependencies: Literal["none", "prefix"] = "none"

    @property
    def conversational(self) -> bool:
        """Its requests follow one another: Bailian's by their ids, Mooncake's by inferred prefixes."""
        return self.format == "bailian" or self.dependencies == "prefix"

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
        if self.dependencies == "prefix" and self.format != "mooncake":
            raise ValueError("dependencies: prefix infers a Mooncake trace's; Bailian's rows name their parents")
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


class ThinkingSpec(Strict):
    """Asking a reasoning model to think or not, how hard, and how long at most: each server family is asked in
    its own words (target/bodies.py, `thinking_fields`, with the sources); a family with no way to say one of
    these stops the run before it starts."""

    enabled: bool | None = None
    effort: Annotated[str, Field(min_length=1)] | None = None  # reasoning_effort: e.g. none, low, medium, high
    budget_tokens: PositiveInt | None = None  # the thinking's tokens at most


class CancelSpec(Strict):
    """Requests the client abandons mid-stream, as a chat UI's stop button or an agent's timeout do
    (schedule/cancel.py): a `share` of them, each at its own point, drawn from `after_s` (seconds after its
    send) or `after_tokens` (output tokens of any kind received); with `before_first_token`, at after_s only
    where no token has come by then (a user who gives up waiting)."""

    share: Annotated[float, Field(gt=0, le=1)]
    after_s: OptionalSeconds = None
    after_tokens: OptionalLength = None
    before_first_token: bool = False

    @model_validator(mode="after")
    def _one_point(self) -> CancelSpec:
        if (self.after_s is None) == (self.after_tokens is None):
            raise ValueError("give one of after_s (seconds after the send) or after_tokens (output tokens received)")
        if self.before_first_token and self.after_s is None:
            raise ValueError("before_first_token goes with after_s: the time a user waits for the first token")
        return self


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
    # a reasoning model's thinking written inline in the answer's text between these tags, where the server sends
    # it in no field of its own (client/thinking.py): e.g. ["<think>", "</think>"]; "" opens with the output
    think_tags: tuple[str, Annotated[str, Field(min_length=1)]] | None = None
    cancel: CancelSpec | None = None  # requests the client abandons mid-stream
    thinking: ThinkingSpec | None = None  # a reasoning model asked to think, or not, or for so long


class StopSpec(Strict):
    requests: PositiveInt | None = None
    duration_s: PositiveFloat | None = None
    on_saturation: bool = False  # end the stage once requests clearly arrive faster than they finish
    saturation_window_s: PositiveFloat = 10.0  # the window that judges it (loadgen/load/saturation.py)


class SloSpec(Strict):
    ttft_ms: PositiveFloat | None = None
    answer_ttft_ms: PositiveFloat | None = None  # a reasoning model's answer, after its thinking (metrics.py)
    tpot_ms: PositiveFloat | None = None
    e2e_ms: PositiveFloat | None = None
    task_s: PositiveFloat | None = None  # an agent task's latency, first send to last answer (tasks stages only)


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
    # what the stage measures, for the study's views; `search`: a capacity search's trial (loadgen search)
    phase: Literal["prefill", "decode", "search"] | None = None
    sessions: SessionsSpec | None = None  # multi-turn conversations instead of independent requests
    tasks: TasksSpec | None = None  # agent tasks: graphs of calls (docs/agents.md)

    @model_validator(mode="after")
    def _bounded(self) -> StageSpec:
        if self.load.arrival != "trace" and self.stop.requests is None and self.stop.duration_s is None:
            raise ValueError("stop: give 'requests' or 'duration_s' (or both) so that the stage ends by itself")
        if self.requests.prompt_format == "tokens" and self.api == "chat":
            raise ValueError("requests.prompt_format: token-ID prompts need api: completions")
        if self.sessions is not None:
            if self.load.arrival == "trace":
                raise ValueError("sessions: a trace replay brings its own conversations (chat_id, parent_chat_id)")
            if self.requests.prompt_tokens is not None or self.requests.output_tokens is not None:
                raise ValueError(
                    "sessions: a session's lengths are sessions.user_tokens and sessions.output_tokens, "
                    "not requests.prompt_tokens or requests.output_tokens"
                )
            if self.requests.prompt_format == "tokens" and self.requests.tokenizer is None:
                raise ValueError(
                    "sessions with token-ID prompts need requests.tokenizer, to turn each answer into the token "
                    "IDs the next turn resends (or use prompt_format: text)"
                )
        if self.tasks is not None:
            if self.sessions is not None or self.load.arrival == "trace":
                raise ValueError("tasks: a stage runs agent tasks, sessions or a trace, one of them")
            if self.requests.prompt_tokens is not None or self.requests.output_tokens is not None:
                raise ValueError("tasks: each call's lengths are its step's call.prompt_tokens and call.output_tokens")
            if self.requests.prompt_format == "tokens":
                raise ValueError("tasks: an agent's calls resend answers as text (prompt_format: text or auto)")
        return self

    @property
    def text_prompts(self) -> bool:
        fmt = self.requests.prompt_format
        conversing = self.sessions is not None or self.tasks is not None
        return fmt == "text" or (fmt == "auto" and (self.api == "chat" or conversing))


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
    sessions: SessionsSpec | None = None
    tasks: TasksSpec | None = None
    stages: list[StageSpec] = Field(default_factory=list)
