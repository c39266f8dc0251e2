"""Reading the chunks of an OpenAI-compatible stream (chat and completions)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from loadgen.results import ErrorKind


@dataclass(slots=True)
class Chunk:
    """What one streamed `data:` payload told us."""

    text: str = ""  # generated text it added: the answer
    reasoning: str = ""  # thinking it added, where the server streams it apart from the answer (see read_chunk)
    completion_tokens: int | None = None  # usage.completion_tokens, when present (thinking included)
    reasoning_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens, when present
    prompt_tokens: int | None = None  # usage.prompt_tokens, when present
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens: prompt tokens the server reused
    prefill_ms: float | None = None  # timings.prompt_ms: the server's own prefill time (llama.cpp)
    decode_ms: float | None = None  # timings.predicted_ms: its own decode time
    handoff_ms: float | None = None  # handoff.total_ms: a prefill/decode pair's KV move (loadgen.launch.pair)
    kv_bytes: int | None = None  # handoff.kv_bytes: the KV cache it moved
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
        return Chunk(error=f"server error in stream: {_message(obj)[:200]}", error_kind="stream_error")
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
        if isinstance(delta, dict):
            out.reasoning = _thinking(delta)
    usage = obj.get("usage")
    if isinstance(usage, dict):
        ct, pt = usage.get("completion_tokens"), usage.get("prompt_tokens")
        out.completion_tokens = ct if isinstance(ct, int) else None
        out.prompt_tokens = pt if isinstance(pt, int) else None
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        out.cached_tokens = cached if isinstance(cached, int) and not isinstance(cached, bool) else None
        # OpenAI's usage object counts a reasoning model's thinking inside completion_tokens and apart here.
        details = usage.get("completion_tokens_details")
        thought = details.get("reasoning_tokens") if isinstance(details, dict) else None
        out.reasoning_tokens = thought if isinstance(thought, int) and not isinstance(thought, bool) else None
    timings = obj.get("timings")  # llama.cpp's own account, in the last event (with usage, or without it)
    if isinstance(timings, dict):
        out.prefill_ms, out.decode_ms = _number(timings.get("prompt_ms")), _number(timings.get("predicted_ms"))
    handoff = obj.get("handoff")  # a prefill/decode pair's own account of moving the KV cache, beside timings
    if isinstance(handoff, dict):
        out.handoff_ms = _number(handoff.get("total_ms"))
        kv = handoff.get("kv_bytes")
        out.kv_bytes = kv if isinstance(kv, int) and not isinstance(kv, bool) else None
    return out


# Where a chat stream's delta carries thinking, apart from its `content`:
# - `reasoning_content`: DeepSeek's API (api-docs.deepseek.com, "Reasoning Model"), vLLM's reasoning parsers up to
#   0.10 (docs.vllm.ai, "Reasoning Outputs"), llama.cpp's server with --reasoning-format deepseek (its README);
# - `reasoning`: vLLM from 0.11 ("reasoning used to be called reasoning_content", the same page of 0.11's docs).
THINKING_KEYS = ("reasoning_content", "reasoning")


def _thinking(delta: dict) -> str:
    for key in THINKING_KEYS:
        value = delta.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _number(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def error_message(body: bytes) -> str:
    """A server's answer to a failed request, in its own words: an OpenAI-style error's message, or the start of
    the body, on one line."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return " ".join(body.decode("utf-8", "replace").split())[:300] or "no body"
    return " ".join(_message(obj).split())[:300]


def _message(obj: object) -> str:
    """An OpenAI-style error's message ({"error": {"message": ...}}, or one of its looser forms)."""
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    msg = err.get("message") if isinstance(err, dict) else err
    return str(msg if msg is not None else obj)
