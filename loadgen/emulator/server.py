"""The emulator's HTTP server (aiohttp): OpenAI-compatible completions and chat completions, streaming or not,
timed by an engine (engine.py); plus /v1/models, /health and Prometheus-style /metrics; in the shape of vLLM or of
llama.cpp (shapes.py; llama.cpp's also answers GET /props)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, NamedTuple

import numpy as np
import orjson
from aiohttp import web

from loadgen.emulator import shapes
from loadgen.emulator.engine import Backend, FittedEngine, GpuEngine, Seq, build, engines
from loadgen.emulator.histogram import TTFT_BUCKETS_S, Histogram
from loadgen.emulator.prefix import block_keys
from loadgen.emulator.shapes import OUTPUT_WORDS, EventBytes
from loadgen.schedule.lengths import LengthSampler
from loadgen.spec.endpoint import EndpointSpec

_ANSWER_WORDS = [w.strip() for w in OUTPUT_WORDS]


def answer_tokens(n: int) -> list[str]:
    """The first n tokens of every answer, as a prompt that resends the answer counts them (a word a token)."""
    return (_ANSWER_WORDS * (n // len(_ANSWER_WORDS) + 1))[:n]


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.kind = status, kind


def _error(message: str, status: int, kind: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {
        "object": "error",
        "message": message,
        "type": kind,
        "code": status,
        "error": {"message": message, "type": kind, "code": status},
    }
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _prompt(body: dict[str, Any], chat: bool) -> tuple[list, int]:
    """The prompt's tokens: its whitespace-separated words (all messages' in turn), or its token IDs; and a chat
    prompt's words before its last user message, at least one (llama.cpp takes a context checkpoint where that
    message begins, after the template's first token in a one-message prompt: perf.prompt_stops), else 0."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        words: list = []
        lead = 0
        for m in messages:
            if isinstance(m, dict) and m.get("role") == "user":
                lead = len(words)
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                words += content.split()
            elif isinstance(content, list):  # content parts
                for p in content:
                    if isinstance(p, dict):
                        words += str(p.get("text", "")).split()
            else:
                raise BadRequest("each message needs a 'content' string")
        return words, max(lead, 1)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt.split(), 0
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return prompt, 0
    raise BadRequest("'prompt' must be a string or a list of token IDs")


class _Request(NamedTuple):
    """A request as the emulator parsed it."""

    body: dict[str, Any]
    prompt: list
    lead: int  # _prompt's: a chat prompt's words before its last user message
    target: int  # the tokens it will be answered with, thinking included
    thinking: int  # of those, the thought
    finish: str  # its finish reason


def _positive_int(body: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadRequest(f"'{key}' must be a non-negative integer")
        return value
    return None


class Emulator:
    def __init__(self, endpoint: EndpointSpec):
        assert endpoint.emulate is not None
        self.endpoint = endpoint
        self.spec = endpoint.emulate
        self.family = self.spec.server
        self.model_cfg = self.spec.model_profile()
        self.model = endpoint.model or self.spec.model  # the name it serves: the file's, or the profile's
        self.backend: Backend = build(self.spec)
        self.rng = np.random.default_rng(self.spec.seed)
        # a reasoning model's thinking lengths, on a stream of their own
        reasoning = self.spec.reasoning
        self.thoughts = (
            LengthSampler(reasoning.tokens, np.random.default_rng([self.spec.seed, 1])) if reasoning else None
        )
        self.requests_total = 0
        # vLLM's own TTFT: from the request's arrival at its engine to its first token, the HTTP path and the
        # tokenizing left out (a twin fitted from a study of this server takes them out of its prefill, as its
        # own server pays its own: calibrate/fit.py).
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS_S
        )
        # The block size of the engines' prefix caches (None: no engine keeps one).
        self.caches = [e.cache for e in engines(self.backend) if getattr(e, "cache", None) is not None]
        self.block = self.caches[0].block if self.caches else None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        if self.family == "llamacpp":
            app.router.add_get("/props", self.props)

        async def on_startup(_: web.Application) -> None:
            self.backend.start()

        app.on_startup.append(on_startup)
        return app

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(self, _: web.Request) -> web.Response:
        card = {
            "id": self.model,
            "object": "model",
            "owned_by": "llamacpp" if self.family == "llamacpp" else "loadgen",
            "max_model_len": self.model_cfg.max_context,
        }
        return web.Response(body=orjson.dumps({"object": "list", "data": [card]}), content_type="application/json")

    async def metrics(self, _: web.Request) -> web.Response:
        es = engines(self.backend)
        errors = [e.errors for e in es]
        own = [
            ("loadgen_emulator_requests_total", "counter", "Requests accepted.", f"{self.requests_total}"),
            ("loadgen_emulator_steps_total", "counter", "Engine steps.", f"{sum(e.steps_total for e in es)}"),
        ]
        lines = []
        for name, kind, about, value in self._families(es) + own:
            # Prometheus' own clients (vLLM's) declare a counter without its _total; llama.cpp's server with it.
            meta = name.removesuffix("_total") if kind == "counter" and self.family == "vllm" else name
            lines += [f"# HELP {meta} {about}", f"# TYPE {meta} {kind}", f"{name} {value}"]
        lines += self._cache_config(es)
        if self.family == "vllm":
            lines += self.ttft.lines()
        p50, p99 = (max(x.pct(q) for x in errors) for q in (50, 99))
        lines += [
            "# HELP loadgen_emulator_step_release_error_ms How late engine steps released their tokens.",
            "# TYPE loadgen_emulator_step_release_error_ms summary",
            f'loadgen_emulator_step_release_error_ms{{quantile="0.5"}} {p50:.4f}',
            f'loadgen_emulator_step_release_error_ms{{quantile="0.99"}} {p99:.4f}',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def _families(self, es: list) -> list[tuple[str, str, str, str]]:
        """(sample name, type, help, value) in the family's names where it has the figure: vLLM V1's
        (vllm/v1/metrics/loggers.py), or llama.cpp's server's (tools/server, GET /metrics; its help texts)."""
        running, waiting = f"{sum(e.running for e in es)}", f"{sum(e.waiting for e in es)}"
        computed = f"{sum(e.prompt_tokens_total for e in es)}"  # prompt tokens prefilled: cached ones excluded
        hits, generated = f"{sum(c.hit_tokens for c in self.caches)}", f"{es[-1].generation_tokens_total}"
        if self.family == "llamacpp":
            return [
                ("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed, excluding cached "
                 "tokens", computed),
                ("llamacpp:prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache",
                 hits),
                ("llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed", generated),
                ("llamacpp:requests_processing", "gauge", "Number of requests processing", running),
                ("llamacpp:requests_deferred", "gauge", "Number of requests deferred", waiting),
            ]  # fmt: skip
        return [
            ("vllm:num_requests_running", "gauge", "Requests in the running batch.", running),
            ("vllm:num_requests_waiting", "gauge", "Requests waiting.", waiting),
            ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage, 1 is full.", f"{max(e.kv_usage() for e in es):.6f}"),
            ("vllm:prompt_tokens_total", "counter", "Prefill tokens.", computed),
            ("vllm:generation_tokens_total", "counter", "Generation tokens.", generated),
            ("vllm:prefix_cache_queries_total", "counter", "Prefix-cache queried tokens.",
             f"{sum(c.queried_tokens for c in self.caches)}"),
            ("vllm:prefix_cache_hits_total", "counter", "Prefix-cache hit tokens.", hits),
        ]  # fmt: skip

    def _cache_config(self, es: list) -> list[str]:
        """vLLM's `vllm:cache_config_info` (vllm/v1/metrics/loggers.py: the cache config as labels, value 1): the
        KV cache's blocks and their size, where the engine has one of a fixed size (a batching GPU engine's; a
        GroqRack keeps none across steps, and a twin without a measured capacity has none to say)."""
        if self.family != "vllm" or not es or not isinstance(es[-1], GpuEngine):
            return []
        e = es[-1]
        if isinstance(e, FittedEngine) and e.fitted.kv_tokens is None:
            return []
        s = e.serving
        labels = {
            "block_size": s.block_size,
            "num_gpu_blocks": e.kv_capacity // s.block_size,
            "gpu_memory_utilization": s.gpu_memory_utilization,
            "enable_prefix_caching": s.enable_prefix_caching,
        }
        said = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return [
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
            "# TYPE vllm:cache_config_info gauge",
            f"vllm:cache_config_info{{{said}}} 1.0",
        ]

    async def props(self, _: web.Request) -> web.Response:
        """llama.cpp's GET /props, with the keys loadgen (target/identify.py) and llama.cpp's clients read: its
        generation defaults and context (llama.cpp's is per slot; here the model's), and its slots (here the
        engine's sequences at most)."""
        fitted = self.spec.fitted
        slots = fitted.slots if fitted is not None else self.spec.serving.max_num_seqs
        body = {
            "default_generation_settings": {"n_ctx": self.model_cfg.max_context, "params": {"n_predict": -1}},
            "total_slots": slots,
            "model_alias": self.model,
            "model_path": f"{self.model}.gguf",
            "build_info": "loadgen emulator",
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    def _parse(self, raw: bytes, chat: bool) -> _Request:
        """The request; raises BadRequest as the server would answer."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        model = body.get("model", self.model)
        if model != self.model:
            raise BadRequest(f"The model `{model}` does not exist.", 404, "NotFoundError")
        prompt, lead = _prompt(body, chat)
        prompt_tokens = len(prompt)
        if self.spec.faults.reject_token_prompts and not chat and not isinstance(body.get("prompt"), str):
            raise BadRequest("prompt must be a string", 422, "UnprocessableEntity")
        max_tokens = _positive_int(body, "max_completion_tokens", "max_tokens")
        if max_tokens is None:
            max_tokens = 16
        if max_tokens < 1:
            raise BadRequest("'max_tokens' must be at least 1")
        min_tokens = _positive_int(body, "min_tokens") or 0
        limit = self.model_cfg.max_context
        if prompt_tokens + max_tokens > limit:
            raise BadRequest(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} in the completion)."
            )
        if not self.backend.fits(prompt_tokens, max_tokens):
            raise BadRequest(
                "the request does not fit the emulated hardware (its KV cache, or a compiled input length)"
            )
        # Without ignore_eos the model may stop early: its natural length is drawn from the emulator's seed.
        ignore_eos = body.get("ignore_eos") is True
        if ignore_eos:
            target = max_tokens
        else:
            natural = 1 + int(self.rng.exponential(self.spec.eos_mean_tokens))
            target = min(max_tokens, max(natural, min_tokens, 1))
        thinking, budget = 0, target
        if (r := self.spec.reasoning) is not None:
            thought = self._asked(body, self.thoughts())
            if r.spends_max_tokens:  # the answer gets what the thinking leaves, perhaps nothing
                target = max_tokens if ignore_eos else min(max_tokens, thought + target)
                thinking = min(thought, target)
                budget = target
            else:
                thinking, target = thought, thought + target
        return _Request(body, prompt, lead, target, thinking, "length" if budget == max_tokens else "stop")

    def _asked(self, body: dict[str, Any], thought: int) -> int:
        """The thinking a request gets of the `thought` drawn, as it asked (target/bodies.py thinking_fields):
        none where it turned thinking off, at most its budget (vLLM's and llama.cpp's fields)."""
        kwargs = body.get("chat_template_kwargs")
        off = isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False
        if off or body.get("reasoning_effort") == "none":
            return 0
        budget = body.get("thinking_budget_tokens" if self.family == "llamacpp" else "thinking_token_budget")
        return min(thought, budget) if isinstance(budget, int) and budget >= 0 else thought

    def _fault(self) -> str | None:
        f = self.spec.faults
        u = self.rng.random()
        for name, rate in (
            ("error", f.error_rate),
            ("rate_limit", f.rate_limit_rate),
            ("drop", f.drop_rate),
            ("malformed", f.malformed_rate),
            ("stall", f.stall_rate),
        ):
            if u < rate:
                return name
            u -= rate
        return None

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body, prompt, lead, target, thinking, finish = self._parse(await request.read(), chat)
        except BadRequest as e:
            return _error(str(e), e.status, e.kind)
        fault = self._fault()
        f = self.spec.faults
        if fault == "error":
            return _error("emulated server error", f.error_status, "InternalServerError")
        if fault == "rate_limit":
            return _error("emulated rate limit", 429, "RateLimitError", {"Retry-After": f"{f.retry_after_s:g}"})
        self.requests_total += 1
        prompt_tokens = len(prompt)
        keys: list[int] = []
        if self.block:  # one pass over the prompt and the answer to come: the prompt's keys lead
            keys = block_keys(prompt + answer_tokens(target - 1), self.block)
        seq = Seq(prompt_tokens, target, keys[: prompt_tokens // self.block] if self.block else (), keys)
        seq.thinking, seq.lead = thinking, lead
        # vLLM stamps a request's arrival as its engine takes it in (vllm/v1/engine/processor.py, process_inputs),
        # after its OpenAI server has rendered and tokenized the prompt: here, once it is read and keyed.
        arrived = time.monotonic()
        seq.on_first_token = lambda: self.ttft.observe((seq.first_token_s or arrived) - arrived)
        self.backend.submit(seq)
        head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
        }
        try:
            if not body.get("stream"):
                while await seq.take():
                    pass
                return self._whole(head, chat, target, finish, seq)
            return await self._stream(request, body, head, chat, seq, finish, fault)
        finally:
            if not seq.done:
                self.backend.cancel(seq)  # the client went away: the engine frees its place

    def _thought_field(self, chat: bool) -> str | None:
        """The delta field a reasoning model's thought goes in; None where it stays in the text (think_tags, and
        any completions answer: no parser takes it out there)."""
        r = self.spec.reasoning
        return r.format if r is not None and r.format != "think_tags" and chat else None

    def _usage(self, seq: Seq, chat: bool) -> dict[str, Any]:
        parsed = self._thought_field(chat) is not None
        return shapes.usage(self.family, seq, caches=bool(self.block), parsed=parsed)

    def _whole(self, head: dict, chat: bool, n: int, finish: str, seq: Seq) -> web.Response:
        text = "".join(OUTPUT_WORDS[i % len(OUTPUT_WORDS)] for i in range(n))
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        field = self._thought_field(chat)
        if field is not None and seq.thinking:  # the thought in its own field
            cut = sum(len(OUTPUT_WORDS[i % len(OUTPUT_WORDS)]) for i in range(seq.thinking))
            choice["message"] = {"role": "assistant", "content": text[cut:] or None, field: text[:cut]}
        elif chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        out = {**head, "object": "chat.completion" if chat else "text_completion", "choices": [choice]}
        out["usage"] = self._usage(seq, chat)
        if self.family == "llamacpp":
            out["timings"] = shapes.timings(seq)
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        body: dict,
        head: dict,
        chat: bool,
        seq: Seq,
        finish: str,
        fault: str | None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        events = EventBytes(self.family, head, chat, finish, seq.target, seq.thinking, self._thought_field(chat))
        # The headers went out with prepare(); the first body bytes go through aiohttp, later ones straight to the
        # transport (_stream_fast). vLLM's shape opens with a role-only chat event, or an SSE comment.
        if opening := events.opening():
            await resp.write(opening)
        if fault is None:
            await self._stream_fast(request, seq, events)
            if seq.cancelled:  # the client went away mid-stream
                return resp
        else:
            await self._stream_faulty(request, resp, seq, events, fault)
            if fault == "drop":
                return resp
        opts = body.get("stream_options")
        # llama.cpp's completions streams send usage whether asked or not; chat streams, as vLLM's, only if asked.
        asked = (isinstance(opts, dict) and bool(opts.get("include_usage"))) or (self.family == "llamacpp" and not chat)
        usage = self._usage(seq, chat) if asked and not self.spec.faults.omit_stream_usage else None
        timings = shapes.timings(seq) if self.family == "llamacpp" else None
        await resp.write(events.closing(usage, timings) + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _stream_fast(self, request: web.Request, seq: Seq, events: EventBytes) -> None:
        """Tokens are written to the connection as the engine releases them, framed as HTTP chunks here."""
        transport = request.transport
        sent = 0

        def push(n: int) -> None:
            nonlocal sent
            if transport is None or transport.is_closing():
                self.backend.cancel(seq)
                return
            data = events.tokens(sent, n)
            sent += n
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))

        seq.on_tokens = push
        await seq.finished()

    async def _stream_faulty(
        self, request: web.Request, resp: web.StreamResponse, seq: Seq, events: EventBytes, fault: str
    ) -> None:
        """The same stream, token by token from a waiting handler, with the fault knobs applied."""
        f = self.spec.faults
        sent = 0
        while n := await seq.take():
            if fault == "stall" and sent == 0:
                await asyncio.sleep(f.stall_first_ms / 1000)
            if fault == "stall" and sent + n >= seq.target > 1:
                await asyncio.sleep(f.stall_between_ms / 1000)
            data = events.tokens(sent, n)
            sent += n
            if fault == "malformed" and sent >= seq.target // 2:
                data += b"data: {not json\n\n"
                fault = "done"
            await resp.write(data)
            if fault == "drop" and sent >= seq.target // 2:
                self.backend.cancel(seq)
                assert request.transport is not None
                request.transport.abort()  # the connection drops mid-stream, with no chunked terminator
                return


def serve(endpoint: EndpointSpec, host: str = "127.0.0.1", port: int = 0) -> None:
    """Run the emulator until interrupted; prints one line with the base URL once it listens."""
    from loadgen.launch.serving import serve_app

    asyncio.run(serve_app(Emulator(endpoint).app(), host, port, f"loadgen emulator '{endpoint.name}'"))
