"""OpenAI-compatible request bodies, with the options each server family needs to produce exactly max_tokens."""

from __future__ import annotations

from typing import Any

import orjson

from loadgen.spec.workload import StageSpec

PATHS = {"chat": "/chat/completions", "completions": "/completions"}

# How each server family is asked to return exactly max_tokens tokens (no early end-of-sequence).
_EXACT_LENGTH: dict[str, dict[str, Any]] = {
    "vllm": {"ignore_eos": True, "min_tokens": None},
    "sglang": {"ignore_eos": True, "min_tokens": None},
    "trtllm": {"ignore_eos": True, "min_tokens": None},
    "emulator": {"ignore_eos": True, "min_tokens": None},
    "llamacpp": {"ignore_eos": True},
    "tgi": {},
    "groq": {},
    "openai": {},
}


Message = dict[str, str]  # a chat message: role and content

# Asking a reasoning model to think or not (enabled), how hard (effort) and how long at most (budget_tokens), in
# each family's words (requests.thinking). Sources:
# - chat_template_kwargs.enable_thinking, read by the model's chat template (Qwen3 thinks unless it is false): vLLM's
#   "Reasoning Outputs" (docs.vllm.ai/en/stable/features/reasoning_outputs), SGLang's "Thinking budget"
#   (docs.sglang.io/docs/advanced_features/thinking_budget), and llama.cpp's server, whose request parser reads
#   chat_template_kwargs and enable_thinking (the packaged xllamacpp build's strings);
# - reasoning_effort: OpenAI's Chat Completions and Groq's API (none turns thinking off), vLLM (gpt-oss), SGLang
#   (forwarded to the template);
# - a budget: llama.cpp's thinking_budget_tokens (its request parser), SGLang's chat_template_kwargs.thinking_budget
#   (a hint Qwen3's template reads, per SGLang's page above), vLLM's thinking_token_budget (discuss.vllm.ai,
#   "thinking_token_budget silently ignored when passed via extra_args").
_TEMPLATE_SWITCH = ("vllm", "sglang", "llamacpp", "emulator")
_EFFORT = ("openai", "groq", "vllm", "sglang", "emulator")
_BUDGET = {"llamacpp": "thinking_budget_tokens", "vllm": "thinking_token_budget", "emulator": "thinking_token_budget"}


def thinking_asked(server: str, stage: StageSpec) -> dict[str, Any] | None:
    """The body fields asking `server`'s family for the stage's `requests.thinking`, if any."""
    t = stage.requests.thinking
    return None if t is None else thinking_fields(server, t.enabled, t.effort, t.budget_tokens)


def thinking_fields(server: str, enabled: bool | None, effort: str | None, budget: int | None) -> dict[str, Any]:
    """The body fields that ask `server`'s family for this thinking; ValueError naming what it cannot be asked."""
    out: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    if enabled is not None:
        if server in _TEMPLATE_SWITCH:
            kwargs["enable_thinking"] = enabled
        elif server in ("openai", "groq") and not enabled:
            out["reasoning_effort"] = "none"
        elif enabled:  # a reasoning model there thinks unasked
            pass
        else:
            raise ValueError(f"the {server} family has no way to turn thinking off that loadgen knows")
    if effort is not None:
        if server not in _EFFORT:
            raise ValueError(f"the {server} family takes no reasoning_effort that loadgen knows")
        out["reasoning_effort"] = effort
    if budget is not None:
        if server == "sglang":
            kwargs["thinking_budget"] = budget
        elif server in _BUDGET:
            out[_BUDGET[server]] = budget
        else:
            raise ValueError(f"the {server} family takes no per-request thinking budget that loadgen knows")
    if kwargs:
        out["chat_template_kwargs"] = kwargs
    return out


def request_body(
    api: str,
    server: str,
    model: str,
    prompt: str | list[int] | list[Message],
    max_tokens: int,
    stream: bool = True,
    thinking: dict[str, Any] | None = None,
) -> bytes:
    """The JSON body for `PATHS[api]`: streamed with usage (a run), or not (a probe that reads `usage`). A chat
    prompt is one user message, or a whole conversation's messages; `thinking`: thinking_fields' fields."""
    body: dict[str, Any] = {"model": model, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if api == "chat":
        whole = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict)
        body["messages"] = prompt if whole else [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    body["max_completion_tokens" if server == "openai" else "max_tokens"] = max_tokens
    for key, value in _EXACT_LENGTH[server].items():
        body[key] = max_tokens if value is None else value
    if thinking:
        body.update(thinking)
    return orjson.dumps(body)
