"""Event-driven schedulers that advance in real time: each step's duration comes from the performance model,
the scheduler sleeps until the step ends, and the step's tokens are released together.

- `GpuEngine`: vLLM-like continuous batching (max sequences, max batched tokens, chunked prefill or
  prefill-first steps), with a KV cache of fixed capacity; requests queue while it is full.
- `FittedEngine`: the same loop, its step time fitted from a measured server (a twin, `loadgen calibrate`).
- `GroqEngine`: no batching; one request at a time in arrival order.
- `Disaggregated`: prefill on one engine, the KV cache over a link, decode on another.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from loadgen.emulator.prefix import PrefixCache, SlotCache
from loadgen.hardware import perf
from loadgen.hardware.profiles import GpuHardware, GroqHardware, ModelConfig
from loadgen.spec.endpoint import EmulateSpec, EngineSpec, FittedSpec, LinkSpec, Serving


class Seq:
    """One request inside the emulator: how far its prefill and decode have come, and its waiting consumer."""

    __slots__ = (
        "prompt",
        "target",
        "prefilled",
        "generated",
        "pending",
        "done",
        "cancelled",
        "thinking",
        "lead",
        "prefill_s",
        "keys",
        "answer_keys",
        "cached",
        "prefill_start_s",
        "first_token_s",
        "last_token_s",
        "on_tokens",
        "on_first_token",
        "_waiter",
    )

    def __init__(self, prompt: int, target: int, keys: Sequence[int] = (), answer_keys: Sequence[int] = ()):
        self.prompt, self.target = prompt, target
        self.keys = keys  # its prompt's block keys, for the prefix cache (prefix.py)
        # The keys through its answer but the last token (whose KV is never computed): a next turn resends both.
        self.answer_keys = answer_keys
        self.cached = 0  # prompt tokens found in the prefix cache
        self.prefilled = 0  # prompt tokens in the KV cache
        self.generated = 0  # output tokens produced
        self.pending = 0  # produced but not yet taken by the HTTP handler
        self.done = False
        self.cancelled = False  # the client went away
        self.thinking = 0  # of its target, the tokens a reasoning model thinks before it answers
        self.lead = 0  # a chat prompt's tokens before its last user message (perf.prompt_stops)
        self.prefill_s = 0.0  # time spent in steps that prefilled it (for layer-wise KV transfer)
        # On the engine's clock (the event loop's, time.monotonic): the start of the first step that prefilled it,
        # and when its first and last tokens were released, for llama.cpp's per-request timings (shapes.py).
        self.prefill_start_s: float | None = None
        self.first_token_s: float | None = None
        self.last_token_s: float | None = None
        # When set, released tokens are handed over at once, within the step's release, instead of waking a
        # waiting handler: the fast path, one call per token instead of a task switch.
        self.on_tokens: Callable[[int], None] | None = None
        self.on_first_token: Callable[[], None] | None = None  # the server's own TTFT (emulator/server.py)
        self._waiter: asyncio.Future[None] | None = None

    def release(self, n: int = 1) -> None:
        self.last_token_s = time.monotonic()
        if self.first_token_s is None:
            self.first_token_s = self.last_token_s
            if self.on_first_token is not None:
                self.on_first_token()
        if self.on_tokens is not None:
            self.on_tokens(n)
        else:
            self.pending += n
            self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def finished(self) -> None:
        while not self.done:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    async def take(self) -> int:
        """Tokens released since the last call (at least one); 0 once the request is finished."""
        while self.pending == 0 and not self.done:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        n, self.pending = self.pending, 0
        return n


SPIN_S = 0.001


async def sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """The poller wakes in whole milliseconds, up to one late: sleep until a millisecond before `when`, then
    wait out the rest on the clock (at most a millisecond spent busy)."""
    delay = when - loop.time() - SPIN_S
    if delay > 0:
        await asyncio.sleep(delay)
    while loop.time() < when:
        pass


@dataclass
class ReleaseErrors:
    """How late steps' tokens were released against the model's step end (ms), over the latest steps."""

    samples: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))

    def add(self, late_s: float) -> None:
        self.samples.append(late_s * 1000.0)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) if self.samples else 0.0


@dataclass
class Step:
    duration_s: float
    prefill: list[tuple[Seq, int]]  # (sequence, prompt tokens computed in this step)
    decode: list[Seq]


class Engine:
    """The real-time loop shared by every engine; subclasses plan steps and apply their results."""

    def __init__(self, model: ModelConfig):
        self.model = model
        self.errors = ReleaseErrors()
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.steps_total = 0
        self._wake = asyncio.Event()
        # When an idle engine was first told of work: its next step starts then, not when the event loop next
        # runs it (the handler that submitted goes on first), so that a lone request's TTFT is its step's.
        self._since: float | None = None
        self._task: asyncio.Task[None] | None = None
        # Called when a sequence's prefill is complete; by default its first token is released at once.
        self.on_prefilled: Callable[[Seq], None] = self.first_token

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, seq: Seq) -> None:
        self._enqueue(seq)
        self._signal()

    def _signal(self) -> None:
        """There may be work (a request came, or a place came free)."""
        if self._since is None:
            self._since = time.monotonic()  # the event loop's clock
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t = loop.time()
        while True:
            step = self.plan()
            if step is None:
                self._wake.clear()
                self._since = None
                await self._wake.wait()
                t = loop.time() if self._since is None else min(self._since, loop.time())
                continue
            # Back-to-back steps start where the last one ended, so neither timer lateness nor the emulator's own
            # work between steps (which the model's per-step overhead already stands for) accumulates.
            end = t + step.duration_s
            for q, _ in step.prefill:
                if q.prefill_start_s is None:
                    q.prefill_start_s = t
            await sleep_until(loop, end)
            self.errors.add(loop.time() - end)
            self.steps_total += 1
            self.complete(step)
            t = end

    def first_token(self, seq: Seq) -> None:
        seq.generated = 1
        self.generation_tokens_total += 1
        seq.release(1)
        if seq.generated >= seq.target:
            self.retire(seq)

    def decoded(self, seq: Seq) -> None:
        seq.generated += 1
        self.generation_tokens_total += 1
        seq.release(1)
        if seq.generated >= seq.target:
            self.retire(seq)

    # Subclasses:
    def _enqueue(self, seq: Seq) -> None:
        raise NotImplementedError

    def plan(self) -> Step | None:
        raise NotImplementedError

    def complete(self, step: Step) -> None:
        """Apply a finished step: prompt tokens computed, first tokens of completed prefills, one token per decode."""
        for q, n in step.prefill:
            q.prefilled += n
            q.prefill_s += step.duration_s
            self.prompt_tokens_total += n
            if q.prefilled >= q.prompt and not q.cancelled:
                self.cache_prefix(q)
                self.on_prefilled(q)
        for q in step.decode:
            if not q.cancelled and not q.done:
                self.decoded(q)

    def hand_off(self, seq: Seq) -> None:
        raise NotImplementedError

    def cache_prefix(self, seq: Seq) -> None:
        """Its prefill is done (an engine with a prefix cache keeps its blocks)."""

    def retire(self, seq: Seq) -> None:
        """The sequence is done (or its client left): free its place and wake its handler, which returns."""
        self.hand_off(seq)
        seq.finish()

    def cancel(self, seq: Seq) -> None:
        """Its client went away: it stops, and its place and KV cache are free now, not at the next step (vLLM
        aborts the request of a closed stream; llama.cpp releases its slot). A step already computing it ends
        as planned, without it."""
        seq.cancelled = True
        self.retire(seq)
        self._signal()

    @property
    def running(self) -> int:
        raise NotImplementedError

    @property
    def waiting(self) -> int:
        raise NotImplementedError

    def kv_usage(self) -> float:
        return 0.0


class GpuEngine(Engine):
    def __init__(self, hw: GpuHardware, model: ModelConfig, serving: Serving, prefill_only: bool = False):
        self.hw = hw
        self._batching(model, serving, perf.gpu_kv_capacity_tokens(hw, model, serving.gpu_memory_utilization))
        self.prefill_only = prefill_only  # the prefill side of a disaggregated pair keeps no decode KV

    def step_s(self, prefill: list[tuple[Seq, int]], decoding: list[Seq]) -> float:
        return perf.gpu_step_s(
            self.hw, self.model, [(n, q.prefilled) for q, n in prefill], [q.prompt + q.generated for q in decoding]
        )

    def _batching(self, model: ModelConfig, serving: Serving, kv_capacity: int) -> None:
        """The continuous-batching state every batching engine shares, whatever times its steps."""
        super().__init__(model)
        self.serving = serving
        self.prefill_only = False
        self.prompt_stops = (0, 0)  # FittedSpec.prompt_tail_tokens, checkpoint_ubatch_tokens
        self.kv_capacity = kv_capacity
        self.kv_used = 0
        self.queue: deque[Seq] = deque()  # not yet admitted
        self.admitted: list[Seq] = []  # holding KV: prefilling or decoding
        self.reserved: dict[int, int] = {}
        blocks = self.kv_capacity // serving.block_size
        self.cache: PrefixCache | SlotCache | None = (
            PrefixCache(blocks, serving.block_size) if serving.enable_prefix_caching else None
        )

    def _need(self, seq: Seq) -> int:
        return seq.prompt + (0 if self.prefill_only else seq.target)

    def fits(self, prompt: int, target: int) -> bool:
        return prompt + (0 if self.prefill_only else target) <= self.kv_capacity

    def _enqueue(self, seq: Seq) -> None:
        self.queue.append(seq)

    def _admit(self) -> Seq | None:
        if not self.queue or len(self.admitted) >= self.serving.max_num_seqs:
            return None
        seq = self.queue[0]
        need = self._need(seq)
        if self.kv_used + need > self.kv_capacity:
            return None  # a full KV cache: the queue waits for running requests to finish
        self.queue.popleft()
        self.kv_used += need
        self.reserved[id(seq)] = need
        self.admitted.append(seq)
        if self.cache is not None and seq.prefilled < seq.prompt:
            seq.cached = seq.prefilled = self.cache.admitted(seq)
        return seq

    def cache_prefix(self, seq: Seq) -> None:
        if self.cache is not None:
            self.cache.prefilled(seq)

    def retire(self, seq: Seq) -> None:
        if self.cache is not None:
            self.cache.retired(seq)
        super().retire(seq)

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self.admitted if s.cancelled]:
            self.retire(seq)
        if any(s.cancelled for s in self.queue):
            for seq in self.queue:
                if seq.cancelled:
                    seq.finish()
            self.queue = deque(s for s in self.queue if not s.cancelled)

    def plan(self) -> Step | None:
        self._drop_cancelled()
        s = self.serving
        budget = s.max_num_batched_tokens
        decoding = [q for q in self.admitted if q.prefilled >= q.prompt]
        prefill: list[tuple[Seq, int]] = []
        if s.chunked_prefill:
            budget -= len(decoding)
            for q in self.admitted:
                if q.prefilled < q.prompt and budget > 0:
                    n = self._chunk(q, budget)
                    prefill.append((q, n))
                    budget -= n
            while budget > 0:
                q = self._admit()
                if q is None:
                    break
                if q.prefilled < q.prompt:
                    n = self._chunk(q, budget)
                    prefill.append((q, n))
                    budget -= n
                else:
                    decoding.append(q)  # arrived prefilled (disaggregated decode side)
        else:  # prefill-first: a step prefills whole prompts of newly admitted requests, or decodes
            while self.queue and (self.queue[0].prompt - self.queue[0].prefilled <= budget or not prefill):
                q = self._admit()
                if q is None:
                    break
                if q.prefilled < q.prompt:
                    prefill.append((q, q.prompt - q.prefilled))
                    budget -= q.prompt - q.prefilled
                else:
                    decoding.append(q)
            if prefill:
                decoding = []
        if not prefill and not decoding:
            return None
        return Step(self.step_s(prefill, decoding), prefill, decoding)

    def _chunk(self, q: Seq, budget: int) -> int:
        """The prompt tokens of `q` this step computes: up to the prompt's next stop (its end, or where the
        server ends a step before its tail: perf.prompt_stops), within the budget."""
        stop = next(s for s in perf.prompt_stops(q.prompt, *self.prompt_stops, q.lead) if s > q.prefilled)
        return min(stop - q.prefilled, budget)

    def hand_off(self, seq: Seq) -> None:
        """Remove the sequence and free its KV cache, without finishing it (it goes on elsewhere)."""
        if id(seq) in self.reserved:
            self.kv_used -= self.reserved.pop(id(seq))
            self.admitted.remove(seq)
        self._signal()

    @property
    def running(self) -> int:
        return len(self.admitted)

    @property
    def waiting(self) -> int:
        return len(self.queue)

    def kv_usage(self) -> float:
        return self.kv_used / self.kv_capacity if self.kv_capacity else 0.0


class FittedEngine(GpuEngine):
    """A twin of a measured server: the GPU engine's continuous batching (slots; prompt chunks riding with the
    decodes, as llama.cpp batches, or prefill-first steps, as the calibration chose), its steps timed by fitted
    figures (perf.fitted_step_s), and each request reaching the engine `request_ms` after it arrived (the
    server's HTTP and tokenizing, fitted too)."""

    # Without a measured KV capacity, admission is bounded by the slots alone.
    UNBOUNDED_KV = 1 << 40

    def __init__(self, fitted: FittedSpec, model: ModelConfig):
        self.fitted = fitted
        self._gathering = False
        self._batching(model, fitted.serving(), fitted.kv_tokens or self.UNBOUNDED_KV)
        self.prompt_stops = (fitted.prompt_tail_tokens, fitted.checkpoint_ubatch_tokens)
        pc = fitted.prompt_cache
        if pc is not None and pc.kind == "slots":
            self.cache = SlotCache(fitted.slots, pc.similarity, pc.kept_offset)

    def step_s(self, prefill: list[tuple[Seq, int]], decoding: list[Seq]) -> float:
        hits = [q.cached for q, _ in prefill if q.cached and q.prefilled == q.cached]  # their first chunk
        completed = sum(1 for q, n in prefill if q.prefilled + n >= q.prompt)
        return perf.fitted_step_s(
            self.fitted, [(n, q.prefilled) for q, n in prefill], [q.prompt + q.generated for q in decoding], hits,
            completed,
        )  # fmt: skip

    def submit(self, seq: Seq) -> None:
        # The gathering is part of the request's fixed cost (measured TTFT less the server's prompt time), not
        # more: a lone request's TTFT is the same with and without it.
        ms = self.fitted.request_ms - min(self.fitted.gather_ms, self.fitted.request_ms)
        if ms <= 0:
            return self._arrive(seq)
        asyncio.get_running_loop().call_later(ms / 1000.0, self._arrive, seq)

    def idle(self) -> bool:
        return not self.admitted and not self.queue

    def _arrive(self, seq: Seq) -> None:
        """The request reaches the engine; an idle one gathers what arrives within `gather_ms` before it plans a
        step."""
        if self._gathering:
            self._enqueue(seq)
            return
        # At most request_ms: a lone request's TTFT is request_ms plus its prefill (a twin fitted from the
        # client's timings has no request_ms, its HTTP time inside the prefill's, and gathers nothing).
        gather_ms = min(self.fitted.gather_ms, self.fitted.request_ms)
        if gather_ms <= 0 or not self.idle():
            return super().submit(seq)
        self._enqueue(seq)
        self._gathering = True
        asyncio.get_running_loop().call_later(gather_ms / 1000.0, self._gathered)

    def _gathered(self) -> None:
        self._gathering = False
        self._signal()

    def kv_usage(self) -> float:
        return 0.0 if self.fitted.kv_tokens is None else super().kv_usage()


class GroqEngine(Engine):
    """One request at a time: its whole prefill, then one token per step until it is done."""

    def __init__(self, hw: GroqHardware, model: ModelConfig):
        super().__init__(model)
        self.hw = hw
        self.queue: deque[Seq] = deque()
        self.current: Seq | None = None
        self.token_s = perf.groq_token_s(hw, model)

    def fits(self, prompt: int, target: int) -> bool:
        # A graph compiled for a static input shape takes nothing longer than that shape.
        return self.hw.prefill_mode != "padded" or prompt <= self.hw.padded_prompt_tokens

    def _enqueue(self, seq: Seq) -> None:
        self.queue.append(seq)

    def plan(self) -> Step | None:
        if self.current is not None and self.current.cancelled:
            self.retire(self.current)
        while self.current is None and self.queue:
            q = self.queue.popleft()
            if q.cancelled:
                q.finish()
            else:
                self.current = q
        q = self.current
        if q is None:
            return None
        if q.prefilled < q.prompt:
            n = q.prompt - q.prefilled
            return Step(perf.groq_prefill_s(self.hw, self.model, n), [(q, n)], [])
        return Step(self.token_s, [], [q])

    def hand_off(self, seq: Seq) -> None:
        if self.current is seq:
            self.current = None
        self._signal()

    @property
    def running(self) -> int:
        return int(self.current is not None)

    @property
    def waiting(self) -> int:
        return len(self.queue)


def make_engine(spec: EngineSpec, model: ModelConfig, prefill_only: bool = False) -> GpuEngine | GroqEngine:
    hw = spec.resolved()
    if isinstance(hw, GpuHardware):
        return GpuEngine(hw, model, spec.serving, prefill_only)
    return GroqEngine(hw, model)


class Disaggregated:
    """Prefill engine -> KV-cache transfer over a link (one transfer at a time) -> decode engine.

    The first token is released when the decode side holds the KV cache, so TTFT includes the transfer.
    """

    def __init__(self, prefill: GpuEngine | GroqEngine, decode: GpuEngine | GroqEngine, link: LinkSpec):
        self.prefill, self.decode, self.link = prefill, decode, link
        self.model = prefill.model
        self.link_free_at = 0.0
        self.transfers_total = 0
        self.in_transfer = 0
        prefill.on_prefilled = self._handoff

    def start(self) -> None:
        self.prefill.start()
        self.decode.start()

    def fits(self, prompt: int, target: int) -> bool:
        return self.prefill.fits(prompt, 0) and self.decode.fits(prompt, target)

    def submit(self, seq: Seq) -> None:
        self.prefill.submit(seq)

    def cancel(self, seq: Seq) -> None:
        """On whichever side holds it (a sequence in transfer is dropped where it arrives)."""
        for side in (self.prefill, self.decode):
            side.cancel(seq)

    def transfer_s(self, seq: Seq) -> float:
        """The KV cache goes over the link, less the prefix blocks the decode side's cache already holds."""
        lk = self.link
        cache = getattr(self.decode, "cache", None)
        held = 0 if cache is None else min(cache.holds(seq.keys) * cache.block, seq.prompt)
        return perf.kv_transfer_s(
            self.model,
            seq.prompt - held,
            lk.gbps,
            lk.latency_ms,
            lk.handoff_ms,
            lk.overlap == "layerwise",
            seq.prefill_s,
        )

    def _handoff(self, seq: Seq) -> None:
        self.prefill.hand_off(seq)
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self.link_free_at)
        done = start + self.transfer_s(seq)
        self.link_free_at = done
        self.in_transfer += 1
        loop.create_task(self._arrive(seq, done))

    async def _arrive(self, seq: Seq, when: float) -> None:
        await sleep_until(asyncio.get_running_loop(), when)
        self.in_transfer -= 1
        self.transfers_total += 1
        if seq.cancelled:
            seq.finish()
            return
        self.decode.cache_prefix(seq)
        self.decode.first_token(seq)
        if not seq.done:
            self.decode.submit(seq)


Backend = GpuEngine | GroqEngine | Disaggregated


def build(spec: EmulateSpec) -> Backend:
    model = spec.model_profile()
    if spec.engine == "disaggregated":
        assert spec.prefill is not None and spec.decode is not None and spec.link is not None
        return Disaggregated(
            make_engine(spec.prefill, model, prefill_only=True), make_engine(spec.decode, model), spec.link
        )
    if spec.engine == "fitted":
        assert spec.fitted is not None
        return FittedEngine(spec.fitted, model)
    return make_engine(spec.single(), model)


def engines(backend: Backend) -> list[GpuEngine | GroqEngine]:
    return [backend.prefill, backend.decode] if isinstance(backend, Disaggregated) else [backend]
