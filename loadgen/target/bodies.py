"""OpenAI-compatible request bodies, with the options each server family needs to produce exactly max_tokens."""

from __future__ import annotations

from typing import Any

import orjson

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


def request_body(
    api: str,
    server: str,
    model: str,
    prompt: str | list[int] | list[Message],
    max_tokens: int,
    stream: bool = True,
) -> bytes:
    """The JSON body for `PATHS[api]`: streamed with usage (a run), or not (a probe that reads `usage`). A chat
    prompt is one user message, or a whole conversation's messages."""
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
    return orjson.dumps(body)
