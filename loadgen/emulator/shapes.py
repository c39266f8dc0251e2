"""The bytes of the emulator's answers in the shape of the server family it speaks (`emulate: {server: ...}`):
vLLM's (the default) or llama.cpp's. The engine's timing is the same under both; only what the answers say
differs.

llama.cpp's shape, as its own server (tools/server, checked against the xllamacpp build the tests run) sends it:
- a chat stream's role-only event (`"content": null`) goes out with the first token, not before it; a completions
  stream writes nothing before its first token (vLLM's shape sends the role event, or an SSE comment, at once);
- every token event has `finish_reason: null`, then a finish event follows: for completions with `text: ""`,
  usage and timings (usage whether or not `stream_options.include_usage` asked for it); for chat with an empty
  delta, and then, where usage was asked for, a `choices: []` event with usage and timings (else the timings ride
  on the finish event);
- usage always has `prompt_tokens_details.cached_tokens` (llama.cpp's `cache_n`), and `timings` is the engine's
  own clock: `prompt_ms` from the step that started its prefill to its first token, `predicted_ms` from its first
  token to its last, `predicted_n` counting the first;
- a client that leaves mid-stream is noticed at the next write and its request cancelled, the tokens made until
  then counted: the same here, as in vLLM's shape;
- /metrics has llama.cpp's names (server.py), its counters growing as the engine computes, where llama.cpp adds a
  request's prompt tokens once its prompt is done and its predicted tokens once it ends.
Not emulated: llama.cpp's per-slot context limit and its slot selection by prompt similarity (the emulated GPU
engine's prefix cache is vLLM's, by blocks).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from loadgen.emulator.engine import Seq

Family = Literal["vllm", "llamacpp"]

OUTPUT_WORDS = (" the", " model", " says", " hello", " and", " then", " more", " words")


def _sse(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class EventBytes:
    """The SSE events of one response, built once per word: each token then costs a lookup, not a JSON dump."""

    def __init__(self, family: Family, head: dict, chat: bool, finish: str, target: int):
        self.family, self.head, self.chat, self.finish, self.target = family, head, chat, finish, target
        prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,'
        key = b'"delta":{"content":' if chat else b'"text":'
        close = b"}" if chat else b""
        self.mid = [prefix + key + orjson.dumps(w) + close + b',"finish_reason":null}]}\n\n' for w in OUTPUT_WORDS]
        # vLLM marks the last token's event with the finish reason; llama.cpp sends a finish event after it.
        last = finish if family == "vllm" else None
        self.last = [
            prefix + key + orjson.dumps(w) + close + b',"finish_reason":' + orjson.dumps(last) + b"}]}\n\n"
            for w in OUTPUT_WORDS
        ]

    def _role(self, content: str | None) -> bytes:
        delta = {"role": "assistant", "content": content}
        return _sse({**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})

    def opening(self) -> bytes:
        """What is written at once (the headers go out with prepare() whatever it is)."""
        if self.family == "llamacpp":
            return b""
        return self._role("") if self.chat else b": stream\n\n"

    def tokens(self, start: int, n: int) -> bytes:
        k = len(OUTPUT_WORDS)
        out = b"".join((self.last if i == self.target - 1 else self.mid)[i % k] for i in range(start, start + n))
        if start == 0 and self.chat and self.family == "llamacpp":
            return self._role(None) + out
        return out

    def closing(self, usage: dict | None, timings: dict | None) -> bytes:
        """The events after the last token, before `data: [DONE]`; `usage` None: not asked for (or withheld)."""
        if self.family == "vllm":
            return _sse({**self.head, "choices": [], "usage": usage}) if usage is not None else b""
        if not self.chat:
            choice = {"text": "", "index": 0, "logprobs": None, "finish_reason": self.finish}
            return _sse({**self.head, "choices": [choice], **_said(usage, timings)})
        finish = {**self.head, "choices": [{"finish_reason": self.finish, "index": 0, "delta": {}}]}
        if usage is None:
            return _sse({**finish, **_said(None, timings)})
        return _sse(finish) + _sse({**self.head, "choices": [], **_said(usage, timings)})


def _said(usage: dict | None, timings: dict | None) -> dict[str, Any]:
    return {k: v for k, v in (("usage", usage), ("timings", timings)) if v is not None}


def usage(family: Family, seq: Seq, caches: bool) -> dict[str, Any]:
    """The usage object once the request is done: vLLM reports cached tokens where it keeps a prefix cache,
    llama.cpp always."""
    out: dict[str, Any] = {
        "prompt_tokens": seq.prompt,
        "completion_tokens": seq.target,
        "total_tokens": seq.prompt + seq.target,
    }
    if caches or family == "llamacpp":
        out["prompt_tokens_details"] = {"cached_tokens": seq.cached}
    return out


def timings(seq: Seq) -> dict[str, float | int]:
    """llama.cpp's `timings` of a finished request, from the emulated engine's own clock."""
    start = seq.prefill_start_s if seq.prefill_start_s is not None else seq.first_token_s
    first, last = seq.first_token_s or 0.0, seq.last_token_s or 0.0
    prompt_n, prompt_ms = seq.prompt - seq.cached, (first - (start or first)) * 1000
    predicted_n, predicted_ms = seq.generated, (last - first) * 1000
    return {
        "cache_n": seq.cached,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / max(prompt_n, 1),
        "prompt_per_second": 1000 * prompt_n / prompt_ms if prompt_ms > 0 else 0.0,
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / max(predicted_n, 1),
        "predicted_per_second": 1000 * predicted_n / predicted_ms if predicted_ms > 0 else 0.0,
    }
