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
- a client that leaves mid-stream has its request cancelled and its slot freed, the tokens made until then
  counted: here at once (the emulator's handler is cancelled when its connection closes), in either shape;
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


THINK_TAGS = ("<think>", "</think>")  # a reasoning model's thought in the text, where no parser takes it out


class EventBytes:
    """The SSE events of one response, built once per word: each token then costs a lookup, not a JSON dump.
    A reasoning model's first `thinking` tokens are its thought (ReasoningSpec): in the delta's `field`, or,
    without one, between THINK_TAGS in the text."""

    def __init__(
        self,
        family: Family,
        head: dict,
        chat: bool,
        finish: str,
        target: int,
        thinking: int = 0,
        field: str | None = None,
    ):
        self.family, self.head, self.chat, self.finish, self.target = family, head, chat, finish, target
        self.thinking = thinking
        self.prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":[{"index":0,'
        self.key = b'"delta":{"content":' if chat else b'"text":'
        # vLLM marks the last token's event with the finish reason; llama.cpp sends a finish event after it.
        self.last_reason = finish if family == "vllm" else None
        self.mid = [self._event(self.key, w, False) for w in OUTPUT_WORDS]
        self.last = [self._event(self.key, w, True) for w in OUTPUT_WORDS]
        self.tagged = field is None
        if thinking and field is not None:
            key = b'"delta":{"content":null,"' + field.encode() + b'":'
            self.thought = [self._event(key, w, False) for w in OUTPUT_WORDS]
            self.thought_last = [self._event(key, w, True) for w in OUTPUT_WORDS]

    def _event(self, key: bytes, word: str, last: bool) -> bytes:
        reason = orjson.dumps(self.last_reason) if last else b"null"
        close = b"}" if self.chat else b""
        return self.prefix + key + orjson.dumps(word) + close + b',"finish_reason":' + reason + b"}]}\n\n"

    def _token(self, i: int) -> bytes:
        last, word = i == self.target - 1, i % len(OUTPUT_WORDS)
        if i >= self.thinking:
            return (self.last if last else self.mid)[word]
        if not self.tagged:
            return (self.thought_last if last else self.thought)[word]
        # The tags are tokens of the thought: its first and its last.
        if i == 0:
            tag = THINK_TAGS[0] + (THINK_TAGS[1] if self.thinking == 1 else "")
        elif i == self.thinking - 1:
            tag = THINK_TAGS[1]
        else:
            return (self.last if last else self.mid)[word]
        return self._event(self.key, tag, last)

    def _role(self, content: str | None) -> bytes:
        delta = {"role": "assistant", "content": content}
        return _sse({**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})

    def opening(self) -> bytes:
        """What is written at once (the headers go out with prepare() whatever it is)."""
        if self.family == "llamacpp":
            return b""
        return self._role("") if self.chat else b": stream\n\n"

    def tokens(self, start: int, n: int) -> bytes:
        if self.thinking:
            out = b"".join(self._token(i) for i in range(start, start + n))
        else:
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


def usage(family: Family, seq: Seq, caches: bool, parsed: bool = False) -> dict[str, Any]:
    """The usage object once the request is done: vLLM reports cached tokens where it keeps a prefix cache,
    llama.cpp always; `parsed`: a reasoning parser split the thinking out."""
    out: dict[str, Any] = {
        "prompt_tokens": seq.prompt,
        "completion_tokens": seq.target,
        "total_tokens": seq.prompt + seq.target,
    }
    if caches or family == "llamacpp":
        out["prompt_tokens_details"] = {"cached_tokens": seq.cached}
    if parsed and seq.thinking:  # the thinking, counted apart where a parser took it out of the text
        out["completion_tokens_details"] = {"reasoning_tokens": seq.thinking}
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
