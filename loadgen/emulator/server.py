"""The emulator's HTTP server (aiohttp): /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from loadgen.emulator.model import SimpleTiming
from loadgen.spec.endpoint import EndpointSpec

OUTPUT_WORDS = (" the", " model", " says", " hello", " and", " then", " more", " words")


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.code = status, code


def _error(message: str, status: int, code: str) -> web.Response:
    body = {"error": {"message": message, "type": code, "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _count_prompt(body: dict[str, Any], chat: bool) -> int:
    """Tokens in the prompt: one per whitespace-separated word, or the length of a token-ID list."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        total = 0
        for m in messages:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, str):
                total += len(content.split())
            elif isinstance(content, list):  # content parts
                total += sum(len(str(p.get("text", "")).split()) for p in content if isinstance(p, dict))
            else:
                raise BadRequest("each message needs a 'content' string")
        return total
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return len(prompt.split())
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, list) and len(prompt) == 1:
        inner = prompt[0]
        if isinstance(inner, str):
            return len(inner.split())
        if isinstance(inner, list) and all(isinstance(t, int) for t in inner):
            return len(inner)
    raise BadRequest("'prompt' must be a string or a list of token IDs")


class Emulator:
    def __init__(self, endpoint: EndpointSpec):
        assert endpoint.emulate is not None
        self.endpoint = endpoint
        self.timing = SimpleTiming(endpoint.emulate)
        self.waiting = 0
        self.prompt_tokens_total = 0
        self.generated_tokens_total = 0
        self.requests_total = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(self, _: web.Request) -> web.Response:
        data = {"object": "list", "data": [{"id": self.endpoint.model, "object": "model", "owned_by": "loadgen"}]}
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    async def metrics(self, _: web.Request) -> web.Response:
        lines = [
            f"loadgen_emulator_requests_running {self.timing.running}",
            f"loadgen_emulator_requests_total {self.requests_total}",
            f"loadgen_emulator_prompt_tokens_total {self.prompt_tokens_total}",
            f"loadgen_emulator_generation_tokens_total {self.generated_tokens_total}",
        ]
        return web.Response(text="\n".join(lines) + "\n")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    def _parse(self, raw: bytes, chat: bool) -> tuple[dict[str, Any], int, int]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        model = body.get("model", self.endpoint.model)
        if model != self.endpoint.model:
            raise BadRequest(f"The model `{model}` does not exist.", 404, "NotFoundError")
        prompt_tokens = _count_prompt(body, chat)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 16))
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadRequest("'max_tokens' must be a positive integer")
        limit = self.timing.spec.max_context
        if prompt_tokens + max_tokens > limit:
            raise BadRequest(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, "
                f"{max_tokens} in the completion)."
            )
        # The emulator never stops early: every request generates max_tokens, as min_tokens/ignore_eos ask.
        return body, prompt_tokens, max_tokens

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body, prompt_tokens, max_tokens = self._parse(await request.read(), chat)
        except BadRequest as e:
            return _error(str(e), e.status, e.code)
        self.requests_total += 1
        self.prompt_tokens_total += prompt_tokens
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max_tokens,
            "total_tokens": prompt_tokens + max_tokens,
        }
        timing = self.timing
        loop = asyncio.get_running_loop()
        timing.running += 1
        try:
            start = loop.time()
            due = start + timing.prefill_s(prompt_tokens)
            if not body.get("stream"):
                for _ in range(max_tokens - 1):
                    due += timing.step_s()
                await asyncio.sleep(max(due - loop.time(), 0))
                self.generated_tokens_total += max_tokens
                text = "".join(OUTPUT_WORDS[i % len(OUTPUT_WORDS)] for i in range(max_tokens))
                choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
                if chat:
                    choice["message"] = {"role": "assistant", "content": text}
                else:
                    choice["text"] = text
                out = {
                    "id": rid,
                    "object": kind,
                    "created": created,
                    "model": self.endpoint.model,
                    "choices": [choice],
                    "usage": usage,
                }
                return web.Response(body=orjson.dumps(out), content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)
            head = {
                "id": rid,
                "object": f"{kind}.chunk" if chat else kind,
                "created": created,
                "model": self.endpoint.model,
            }
            if chat:  # like vLLM, a chat stream opens with a role-only event that carries no text
                role = {
                    **head,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                }
                await resp.write(b"data: " + orjson.dumps(role) + b"\n\n")
            for i in range(max_tokens):
                await asyncio.sleep(max(due - loop.time(), 0))
                word = OUTPUT_WORDS[i % len(OUTPUT_WORDS)]
                finish = "length" if i == max_tokens - 1 else None
                c: dict[str, Any] = {"index": 0, "finish_reason": finish}
                if chat:
                    c["delta"] = {"content": word}
                else:
                    c["text"] = word
                await resp.write(b"data: " + orjson.dumps({**head, "choices": [c]}) + b"\n\n")
                self.generated_tokens_total += 1
                due += timing.step_s()
            opts = body.get("stream_options")
            if isinstance(opts, dict) and opts.get("include_usage"):
                await resp.write(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        finally:
            timing.running -= 1


def serve(endpoint: EndpointSpec, host: str = "127.0.0.1", port: int = 0) -> None:
    """Run the emulator until interrupted; prints one line with the base URL once it listens."""

    async def main() -> None:
        runner = web.AppRunner(Emulator(endpoint).app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"loadgen emulator '{endpoint.name}' serving http://{host}:{bound}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
