"""OpenAI-compatible request bodies and the reading of streamed chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from loadgen.results import ErrorKind

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


def request_body(api: str, server: str, model: str, prompt: str | list[int], max_tokens: int) -> bytes:
    body: dict[str, Any] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    body["max_completion_tokens" if server == "openai" else "max_tokens"] = max_tokens
    for key, value in _EXACT_LENGTH[server].items():
        body[key] = max_tokens if value is None else value
    return orjson.dumps(body)


@dataclass(slots=True)
class Chunk:
    """What one streamed `data:` payload told us."""

    text: str = ""  # generated text it added
    completion_tokens: int | None = None  # usage.completion_tokens, when present
    prompt_tokens: int | None = None  # usage.prompt_tokens, when present
    done: bool = False  # the [DONE] sentinel
    error: str | None = None  # a short reason when the payload is malformed or reports an error
    error_kind: ErrorKind | None = None  # malformed (not what the API sends) | stream_error (the server's error)


DONE = Chunk(done=True)


def read_chunk(payload: bytes) -> Chunk:
    """Interpret one SSE data payload of a chat or completions stream."""
    if payload == b"[DONE]":
        return DONE
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Chunk(error="event is not valid JSON", error_kind="malformed")
    if not isinstance(obj, dict):
        return Chunk(error="event is not a JSON object", error_kind="malformed")
    if "error" in obj:
        err = obj["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        return Chunk(error=f"server error in stream: {str(msg)[:200]}", error_kind="stream_error")
    out = Chunk()
    choices = obj.get("choices")
    if choices:
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            return Chunk(error="'choices' is not a list of objects", error_kind="malformed")
        choice = choices[0]
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if isinstance(text, str):
            out.text = text
    usage = obj.get("usage")
    if isinstance(usage, dict):
        ct, pt = usage.get("completion_tokens"), usage.get("prompt_tokens")
        out.completion_tokens = ct if isinstance(ct, int) else None
        out.prompt_tokens = pt if isinstance(pt, int) else None
    return out
