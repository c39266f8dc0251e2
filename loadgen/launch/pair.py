"""Prefill on one llama.cpp engine, decode on another, behind one OpenAI-compatible proxy (aiohttp).

For each completions or chat request (streamed or not):
1. engine A (prefill) prefills the prompt into a slot of its own and samples one token, which is not sent on;
2. A saves that slot's KV cache to a file (`POST /slots/{id}?action=save`);
3. the file is copied to B's slot directory, no faster than the link (`link_gbps`) would carry it;
4. engine B (decode) restores it into a free slot of its own (`POST /slots/{id}?action=restore`);
5. B answers the request from that slot (`id_slot`, `cache_prompt`): it finds the prompt cached but for its last
   few tokens, and its stream goes to the client as it comes.
So the first token a client sees comes after the KV transfer, as the emulated disaggregated endpoint and
`loadgen disagg` define TTFT. Slots come from a pool per engine and go back whatever happens (an engine's error, a
client that leaves), and each KV file is deleted once restored.

The pair answers as one server: the last event's `timings` and `usage` keep B's decode figures but carry A's
prefill (`prompt_n`, `prompt_ms`, `cache_n`: what the pair's prefill did), and a `handoff` object says what the
move cost: `save_ms`, `copy_ms`, `restore_ms`, their sum `total_ms`, `kv_bytes`, the wait for a B slot
(`wait_ms`) and B's own prompt figures (`decode_side`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from loadgen.spec.endpoint import EndpointSpec, LlamaCppPairLaunch

GENERATE = ("/v1/completions", "/v1/chat/completions")
# What the pair passes to B as it is (B serves the model and the decode; its /metrics would count only its half).
FROM_DECODE = ("/v1/models", "/props", "/tokenize", "/detokenize", "/apply-template")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "server_error", "code": status}}, status=status)


class Pair:
    """The proxy's state: the two engines' base URLs and slot directories, a slot pool for each."""

    def __init__(self, a: str, b: str, a_dir: Path, b_dir: Path, launch: LlamaCppPairLaunch):
        self.a, self.b, self.a_dir, self.b_dir = a, b, a_dir, b_dir
        self.link_gbps = launch.link_gbps
        self.a_slots: asyncio.Queue[int] = asyncio.Queue()
        self.b_slots: asyncio.Queue[int] = asyncio.Queue()
        for pool, n in ((self.a_slots, launch.prefill.slots), (self.b_slots, launch.decode.slots)):
            for i in range(n):
                pool.put_nowait(i)
        self.session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/health", self._health)
        for path in GENERATE:
            app.router.add_post(path, self._generate)
        for path in FROM_DECODE:
            app.router.add_route("*", path, self._pass)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _: web.Application) -> None:
        # No time limit: a stream lasts as long as its answer.
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)

    async def _close(self, _: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _pass(self, request: web.Request) -> web.Response:
        assert self.session is not None
        async with self.session.request(
            request.method, self.b + request.path_qs, data=await request.read(), headers=_content_type(request)
        ) as r:
            return web.Response(status=r.status, body=await r.read(), content_type=r.content_type)

    async def _slot_action(self, base: str, slot: int, action: str, filename: str) -> float:
        """POST /slots/{slot}?action=...; its wall time in ms. Raises RuntimeError with the engine's answer."""
        assert self.session is not None
        t = time.perf_counter()
        async with self.session.post(f"{base}/slots/{slot}?action={action}", json={"filename": filename}) as r:
            if r.status != 200:
                raise RuntimeError(f"slot {action} answered HTTP {r.status}: {(await r.text())[:200]}")
        return (time.perf_counter() - t) * 1000

    async def _copy(self, name: str) -> tuple[float, int]:
        """The KV file from A's directory to B's, at the link's speed at most; (ms, bytes)."""
        t = time.perf_counter()
        src, dst = self.a_dir / name, self.b_dir / name
        size = await asyncio.to_thread(_move, src, dst)
        if self.link_gbps is not None:
            await asyncio.sleep(max(0.0, size * 8 / (self.link_gbps * 1e9) - (time.perf_counter() - t)))
        return (time.perf_counter() - t) * 1000, size

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body is not a JSON object")
        name = f"{uuid.uuid4().hex}.kv"
        try:
            a = await self.a_slots.get()
            try:
                first = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
                first.update(stream=False, max_tokens=1, n_predict=1, id_slot=a, cache_prompt=True)
                async with self.session.post(self.a + request.path, json=first) as r:
                    if r.status != 200:  # the prompt is refused (too long, malformed): the prefill engine says why
                        return web.Response(status=r.status, body=await r.read(), content_type=r.content_type)
                    prefill = orjson.loads(await r.read()).get("timings") or {}
                save_ms = await self._slot_action(self.a, a, "save", name)
            finally:
                self.a_slots.put_nowait(a)
            copy_ms, size = await self._copy(name)
            waited = time.perf_counter()
            b = await self.b_slots.get()
            try:
                wait_ms = (time.perf_counter() - waited) * 1000
                restore_ms = await self._slot_action(self.b, b, "restore", name)
                (self.b_dir / name).unlink(missing_ok=True)
                handoff = {
                    "save_ms": save_ms,
                    "copy_ms": copy_ms,
                    "restore_ms": restore_ms,
                    "total_ms": save_ms + copy_ms + restore_ms,
                    "kv_bytes": size,
                    "wait_ms": wait_ms,
                }
                rest = {**body, "id_slot": b, "cache_prompt": True}
                async with self.session.post(self.b + request.path, json=rest) as r:
                    if r.status != 200 or not body.get("stream"):
                        answer = await r.read()
                        if r.status == 200:
                            answer = orjson.dumps(_account(orjson.loads(answer), prefill, handoff))
                        return web.Response(status=r.status, body=answer, content_type=r.content_type)
                    return await _relay(request, r, prefill, handoff)
            finally:
                self.b_slots.put_nowait(b)
        except (aiohttp.ClientError, RuntimeError, OSError) as e:
            return _error(502, f"the prefill/decode pair failed: {e}")
        finally:
            for d in (self.a_dir, self.b_dir):
                (d / name).unlink(missing_ok=True)


def _content_type(request: web.Request) -> dict[str, str]:
    return {"Content-Type": request.content_type} if request.body_exists else {}


def _move(src: Path, dst: Path) -> int:
    shutil.copyfile(src, dst)
    src.unlink()
    return dst.stat().st_size


def _account(obj: Any, prefill: dict, handoff: dict) -> Any:
    """The last event (or a whole answer) as the pair's: A's prefill in `timings` and the cached count, B's decode,
    and the handoff."""
    if not isinstance(obj, dict):
        return obj
    timings = obj.get("timings")
    if isinstance(timings, dict):
        handoff = {**handoff, "decode_side": {k: timings.get(k) for k in ("prompt_n", "prompt_ms", "cache_n")}}
        for k in ("prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second", "cache_n"):
            if k in prefill:
                timings[k] = prefill[k]
    usage = obj.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    if isinstance(details, dict) and "cache_n" in prefill:
        details["cached_tokens"] = prefill["cache_n"]
    obj["handoff"] = handoff
    return obj


async def _relay(request: web.Request, r: aiohttp.ClientResponse, prefill: dict, handoff: dict) -> web.StreamResponse:
    """B's stream to the client line by line as it arrives, the event with `timings` made the pair's."""
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await out.prepare(request)
    pending = b""
    try:
        async for data in r.content.iter_any():
            *lines, pending = (pending + data).split(b"\n")
            if lines:
                await out.write(b"".join(_line(line, prefill, handoff) + b"\n" for line in lines))
        if pending:
            await out.write(_line(pending, prefill, handoff))
        await out.write_eof()
    except ConnectionResetError:
        pass  # the client left: leaving here closes B's stream, which stops its decode, and frees the slot
    return out


def _line(line: bytes, prefill: dict, handoff: dict) -> bytes:
    if line.startswith(b"data: ") and b'"timings"' in line:
        return b"data: " + orjson.dumps(_account(orjson.loads(line[6:]), prefill, handoff))
    return line


def serve(name: str, launch: LlamaCppPairLaunch, host: str, port: int) -> None:
    """Start both engines (each on a core of its own where there are two), then serve the proxy until SIGINT or
    SIGTERM; prints one line ending in `serving <base URL>` once it listens."""
    from loadgen.launch.background import start_together
    from loadgen.launch.serving import serve_app

    cores = sorted(os.sched_getaffinity(0))
    pinned = ([cores[0]], [cores[1]]) if len(cores) >= 2 else (None, None)
    with tempfile.TemporaryDirectory(prefix="loadgen-pd-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        dirs = (work / "prefill-kv", work / "decode-kv")
        engines = [
            EndpointSpec(name=f"{name}-{side}", launch=launch.side(side, str(d), pin))
            for side, d, pin in zip(("prefill", "decode"), dirs, pinned, strict=True)
        ]
        a, b = start_together(engines, work, stack)
        pair = Pair(a.url.removesuffix("/v1"), b.url.removesuffix("/v1"), dirs[0], dirs[1], launch)
        asyncio.run(serve_app(pair.app(), host, port, f"loadgen prefill/decode pair '{name}' (llama.cpp A then B)"))
