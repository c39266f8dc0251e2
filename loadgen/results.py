"""What load generation produces, as plain data: one request's raw timestamps and counts (metrics are derived in
metrics.py), and a run's progress so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The class of a request that did not end ok (requests.error); `interrupted` goes with status `interrupted`;
# `not_sent`, `worker_lost`, `session_ended` (an earlier turn of its session got no answer) and `task_ended` (a
# call of an agent task whose dependencies got no answer) with `not_sent`;
# `no_answer`: a complete stream of thinking with no answer after it (status `error`, its events kept).
ErrorKind = Literal[
    "timeout",
    "no_answer",
    "connect",
    "http_429",
    "http_4xx",
    "http_5xx",
    "stream_broken",
    "stream_error",
    "malformed",
    "interrupted",
    "not_sent",
    "worker_lost",
    "session_ended",
    "task_ended",
]


@dataclass(slots=True)
class RequestResult:
    request_id: int
    stage: str
    scheduled_s: float | None  # run clock (seconds since the run's start); None: a closed loop's unsent request
    sent_s: float | None  # None: never sent (the run stopped first)
    prompt_tokens: int  # what loadgen asked for; the server's own count is server_prompt_tokens
    max_tokens: int
    warmup: bool = False  # a stage's first requests, kept in the database but out of `summary`
    end_s: float | None = None
    status: str = "ok"  # ok | error | interrupted | not_sent | cancelled (the workload abandoned it: no error)
    error: ErrorKind | None = None
    error_detail: str | None = None
    http_status: int | None = None
    retries: int = 0  # resends after HTTP 429 (workload retry.on_429)
    retry_after_s: float | None = None  # the server's Retry-After, when it sent one
    event_times: list[float] = field(default_factory=list)  # one per event carrying output, run clock
    event_tokens: list[int] = field(default_factory=list)
    reasoning_events: int = 0  # the first events that carried thinking, not answer (client/openai.py: formats)
    usage_completion_tokens: int | None = None
    usage_reasoning_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens
    server_prompt_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens the server's prefix cache held, when it says
    server_prefill_ms: float | None = None  # the server's own prefill time (llama.cpp's timings.prompt_ms)
    server_decode_ms: float | None = None  # ... and decode time (timings.predicted_ms)
    kv_handoff_ms: float | None = None  # a prefill/decode pair's KV move: save, copy and restore (handoff.total_ms)
    kv_bytes: int | None = None  # ... and the bytes it moved (handoff.kv_bytes)
    text_parts: list[str] | None = None  # output text, kept only when a tokenizer will count it
    tokenizer_tokens: int | None = None  # output tokens counted by the configured tokenizer
    session: int | None = None  # its conversation (a trace's first-turn chat_id), when it belongs to one
    turn: int | None = None  # its turn in that conversation (1: the first)
    parent_request_id: int | None = None  # the request whose answer it follows (a task's call: the last to end)
    task_id: int | None = None  # its agent task, when it belongs to one
    task_step: str | None = None  # its place in the task
    task_calls: int | None = None  # the task's calls, all told
    depends_on: list[int] | None = None  # a task's call: the calls it waited for
    tool_ms: float | None = None  # ... and the tool calls' time planned between their answers and its send
    worker: int | None = 0  # the process that sent it (0 in a single-process run; None: no worker owned it)

    @property
    def first_token_s(self) -> float | None:
        return self.event_times[0] if self.event_times else None

    @property
    def last_token_s(self) -> float | None:
        return self.event_times[-1] if self.event_times else None

    @property
    def answer_first_s(self) -> float | None:
        """The first event of the answer, after any thinking."""
        return self.event_times[self.reasoning_events] if len(self.event_times) > self.reasoning_events else None

    @property
    def output_tokens(self) -> int:
        """Every generated token, thinking included (as usage counts them)."""
        if self.usage_completion_tokens is not None:
            return self.usage_completion_tokens
        if self.tokenizer_tokens is not None:  # it counts the answer's text; thinking at a token an event
            return self.tokenizer_tokens + sum(self.event_tokens[: self.reasoning_events])
        return sum(self.event_tokens)

    @property
    def reasoning_tokens(self) -> int | None:
        """The tokens of thinking: usage's where the server says, else one an event; None where none came."""
        if self.usage_reasoning_tokens is not None:
            return self.usage_reasoning_tokens
        return sum(self.event_tokens[: self.reasoning_events]) if self.reasoning_events else None

    @property
    def output_tokens_source(self) -> str:
        if self.usage_completion_tokens is not None:
            return "usage"
        return "tokenizer" if self.tokenizer_tokens is not None else "events"


def not_sent(
    request_id: int, stage: str, scheduled_s: float | None, prompt_tokens: int, max_tokens: int, warmup: bool
) -> RequestResult:
    """A planned request the run stopped before sending: it still ends as a row, so counts stay honest."""
    return RequestResult(
        request_id=request_id,
        stage=stage,
        scheduled_s=scheduled_s,
        sent_s=None,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        warmup=warmup,
        status="not_sent",
        error="not_sent",
        error_detail="the run stopped before this planned request was sent",
    )


@dataclass
class Progress:
    """A run's progress so far, for a live view."""

    planned: int | None
    done: int
    in_flight: int
    stage: str
    elapsed_s: float
    in_flight_s: float = 0.0  # requests x seconds in flight since the run began (see Recorder)
    stage_start_s: float | None = None  # when the current stage's clock started (run clock), once it has
    timing_bound_ms: float | None = None  # loadgen's own stamping-error bound so far (p99), where known live


@dataclass
class WorkerReport:
    """One load-generating process of a run, as the `workers` table has it."""

    worker: int
    node: str
    users: int | None = None
    clock_offset_ms: float | None = None
    clock_uncertainty_ms: float | None = None
    client_delay_p99_ms: float | None = None
    status: str = "finished"  # finished | lost
    note: str | None = None
