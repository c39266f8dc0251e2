"""The endpoint file's schema: a real OpenAI-compatible server, or the emulator's performance model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError, model_validator

from loadgen.hardware.profiles import (
    GpuHardware,
    GroqHardware,
    ModelConfig,
    load_profile,
    model_profile,
    profile_names,
)
from loadgen.spec.distributions import LengthSpec, Strict

# Server families differ in how they are told to produce exactly max_tokens tokens (see client/openai.py).
Server = Literal["vllm", "sglang", "tgi", "trtllm", "llamacpp", "groq", "openai", "emulator"]


class Serving(Strict):
    """How a GPU engine schedules, as vLLM's options of the same names."""

    max_num_seqs: PositiveInt = 256
    max_num_batched_tokens: PositiveInt = 16384
    chunked_prefill: bool = False  # False: prefill-first steps (vLLM V0); True: prefill chunks ride with decodes
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    # Automatic prefix caching (vLLM V1's default): prompt blocks computed before are reused (emulator/prefix.py).
    enable_prefix_caching: bool = True
    block_size: PositiveInt = 16  # tokens per KV block, the unit of prefix reuse


class EngineSpec(Strict):
    engine: Literal["gpu", "groq"]
    hardware: str
    hardware_overrides: dict[str, Any] = Field(default_factory=dict)  # any profile value, e.g. {overhead_ms: 2}
    serving: Serving = Serving()

    @model_validator(mode="after")
    def _profile(self) -> EngineSpec:
        hw = self.resolved()
        if hw.kind != self.engine:
            raise ValueError(f"hardware {self.hardware!r} is a {hw.kind} profile, not a {self.engine} one")
        return self

    def resolved(self) -> GpuHardware | GroqHardware:
        try:
            hw = load_profile(self.hardware, self.hardware_overrides)
        except KeyError as e:
            raise ValueError(str(e).strip("'\"")) from None
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            raise ValueError(f"hardware_overrides: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        assert isinstance(hw, GpuHardware | GroqHardware)
        return hw


class LinkSpec(Strict):
    """The network that carries a request's KV cache from the prefill engine to the decode engine."""

    gbps: PositiveFloat
    latency_ms: float = Field(default=0.01, ge=0)
    overlap: Literal["none", "layerwise"] = "none"  # layerwise: layers are sent while later ones are computed
    handoff_ms: float = Field(default=0.0, ge=0)  # per request, on top of the transfer


class FaultSpec(Strict):
    """Misbehaviour for tests, off by default. Rates are shares of requests, drawn from the emulator's seed."""

    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=500, ge=400, le=599)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)  # answered 429 with Retry-After
    retry_after_s: float = Field(default=1.0, ge=0)
    drop_rate: float = Field(default=0.0, ge=0, le=1)  # connection dropped mid-stream
    malformed_rate: float = Field(default=0.0, ge=0, le=1)  # one event is not valid JSON
    stall_rate: float = Field(default=0.0, ge=0, le=1)
    stall_first_ms: float = Field(default=0.0, ge=0)  # a stalled request waits this long before its first token
    stall_between_ms: float = Field(default=0.0, ge=0)  # ... and this long before its last token
    # Quirks of real servers (llama-cpp-python's refused token-ID prompts), to test that loadgen copes:
    reject_token_prompts: bool = False  # token-ID prompts answered 422
    omit_stream_usage: bool = False  # no usage in streams, even when asked


class Calibration(Strict):
    """Where a fitted engine's figures come from (`loadgen calibrate`): its source, what it measured, how well
    the fit reproduces each measured stage. Descriptive: the engine's timing reads only FittedSpec's figures."""

    database: str
    endpoint: str
    run_ids: list[str]
    prompt_tokens: tuple[int, int]  # the measured range, smallest and largest prompt
    batches: tuple[int, int]  # ... and sequences decoded together
    contexts: tuple[int, int] | None = None  # ... and prompt plus answer of any request, conversations' included
    timings: Literal["server", "client"]  # fitted from the server's own per-request timings, or from TTFT/TPOT
    # Client timings: the HTTP path and tokenizing taken out of each TTFT (client TTFT less the server's TTFT
    # histogram), ms and ms a prompt token
    http_ms: tuple[float, float] | None = None
    decode_form: str  # the decode form chosen, with each candidate's leave-one-out error
    prefill_form: str = ""  # ... the prefill's
    decode_context: str = ""  # how the decode's context term was fitted, or why it is 0
    limits: str = ""  # where the slots, the KV capacity and the step's token budget came from
    policy: str = ""  # prefill-first or chunked prefill, and what chose it
    prompt_cache: str = ""  # the prompt cache chosen, and from what
    stages: list[dict[str, Any]] = Field(default_factory=list)  # per stage: measured, fitted, error


class PromptCacheSpec(Strict):
    """How a twin's server reuses prompts it has seen (emulator/prefix.py): per slot as llama.cpp (`SlotCache`),
    or by blocks of tokens as vLLM's automatic prefix caching (`PrefixCache`)."""

    kind: Literal["slots", "blocks"]
    similarity: float = Field(default=0.1, ge=0, le=1)  # slots: llama.cpp's --slot-prompt-similarity
    kept_offset: int = 0  # slots: what a slot keeps of a request, in tokens beyond its prompt (negative: fewer)
    block_size: PositiveInt = 16  # blocks: the unit of reuse


class FittedSpec(Strict):
    """A twin's step time, fitted from a measured server (hardware/perf.py `fitted_step_s`), and its limits."""

    prefill_ms_per_token: float = Field(ge=0)
    prefill_step_ms: float = Field(default=0.0, ge=0)  # fixed cost of a step that holds prefill work
    # A step prefilling fewer tokens costs as many (a GPU's memory-bound floor: it reads its weights regardless).
    prefill_floor_tokens: int = Field(default=0, ge=0)
    prefill_ms_per_pair: float = Field(default=0.0, ge=0)  # attention: per causal (query, key) pair prefilled
    # Per context token of each decoding sequence (the KV cache read): a step decoding 8 sequences of 1,000
    # tokens adds 8,000 x this.
    decode_ms_per_context_token: float = Field(default=0.0, ge=0)
    request_ms: float = Field(default=0.0, ge=0)  # per request before it reaches the engine (HTTP, tokenizing)
    # An idle engine waits this long after a request reaches it before it plans a step, so that requests sent
    # together are prefilled together (llama.cpp sets up each task on its one loop before it builds the batch).
    gather_ms: float = Field(default=0.0, ge=0)
    # A prefill that starts from a cached prefix costs this much more, and this much per cached token (llama.cpp
    # restoring a slot's or its RAM cache's state: measured, not assumed).
    cache_hit_ms: float = Field(default=0.0, ge=0)
    cache_hit_ms_per_token: float = Field(default=0.0, ge=0)
    # Each prompt beyond the first that ends in a step (each computes its first token's logits), fitted from the
    # decode stages' first tokens, which a closed loop's users prefill together.
    prefill_ms_per_completion: float = Field(default=0.0, ge=0)
    # Step time (ms) against the sequences decoded in it, linear between the points and beyond the last two.
    decode_step_ms: dict[PositiveInt, float] = Field(min_length=1)
    slots: PositiveInt  # requests served together (llama.cpp's --parallel, vLLM's max_num_seqs); more wait
    batch_tokens: PositiveInt = 2048  # prompt and decode tokens in one step at most (llama.cpp's --batch-size)
    kv_tokens: PositiveInt | None = None  # KV-cache tokens over all slots; none: unbounded
    # True: prompt chunks ride with the decodes (llama.cpp, vLLM V1); False: a step prefills while the decodes
    # wait (prefill-first, vLLM V0's default).
    chunked_prefill: bool = True
    # A prompt's last this many tokens are prefilled in a step of their own, its first token at that step's end,
    # and where the prompt is longer than the tail and a ubatch, a step also ends that ubatch before the tail
    # (perf.prompt_stops): llama.cpp's server does so (4 and its n_ubatch, 512) to take context checkpoints, for
    # a model with sliding-window attention (Gemma 3), a recurrent or a hybrid one. A prompt that arrives while
    # another prefills joins that other's next step, its tail's too, and both first tokens wait for all of it.
    prompt_tail_tokens: NonNegativeInt = 0
    checkpoint_ubatch_tokens: NonNegativeInt = 0
    max_context: PositiveInt | None = None  # prompt plus output per request at most (llama.cpp: ctx / slots)
    prompt_cache: PromptCacheSpec | None = None  # none: every prompt computed whole
    calibration: Calibration | None = None

    def serving(self) -> Serving:
        """The continuous-batching loop's knobs: llama.cpp puts decode tokens and prompt chunks in one batch; a
        prefill-first server (chunked_prefill false) runs a step of prompts while the decodes wait."""
        return Serving(
            max_num_seqs=self.slots,
            max_num_batched_tokens=self.batch_tokens,
            chunked_prefill=self.chunked_prefill,
            enable_prefix_caching=self.prompt_cache is not None and self.prompt_cache.kind == "blocks",
            block_size=self.prompt_cache.block_size if self.prompt_cache is not None else 16,
        )


class ReasoningSpec(Strict):
    """An emulated reasoning model: each answer opens with `tokens` of thinking (drawn per request from the
    emulator's seed), decoded as any output is and streamed in a reasoning parser's field of a chat event:
    `reasoning_content` (DeepSeek's API, vLLM's parsers up to 0.10, llama.cpp's --reasoning-format deepseek) or
    `reasoning` (vLLM from 0.11); or `think_tags`, written in the answer's text between <think> and </think>, as
    a server with no parser does (a completions answer always has it so). Usage counts the thinking in
    completion_tokens, and apart in completion_tokens_details.reasoning_tokens where a parser split it."""

    tokens: LengthSpec
    format: Literal["reasoning_content", "reasoning", "think_tags"] = "reasoning_content"
    # True: thinking spends max_tokens, as vLLM's does, and may spend all of it (no answer: vLLM issue 42548);
    # False: the answer has max_tokens of its own after the thinking.
    spends_max_tokens: bool = True


class EmulateSpec(Strict):
    """The emulator's performance model: one engine (gpu, groq, or fitted from a measured server: a twin) or a
    disaggregated prefill/decode pair."""

    engine: Literal["gpu", "groq", "fitted", "disaggregated"]
    # The server family whose API shape it speaks: its streams' events, usage and timings, /metrics names and
    # routes (emulator/shapes.py). The engine's timing is the same under both.
    server: Literal["vllm", "llamacpp"] = "vllm"
    model: str = "llama-2-7b"
    hardware: str | None = None  # gpu / groq: the profile
    hardware_overrides: dict[str, Any] = Field(default_factory=dict)
    serving: Serving = Serving()
    prefill: EngineSpec | None = None  # disaggregated
    decode: EngineSpec | None = None
    link: LinkSpec | None = None
    fitted: FittedSpec | None = None  # fitted: its figures (loadgen calibrate writes them)
    eos_mean_tokens: PositiveFloat = 256.0  # mean natural length when a request does not ask for ignore_eos
    reasoning: ReasoningSpec | None = None  # a model that thinks before it answers
    seed: int = 0
    faults: FaultSpec = FaultSpec()

    @model_validator(mode="after")
    def _complete(self) -> EmulateSpec:
        if self.engine == "disaggregated":
            if self.prefill is None or self.decode is None or self.link is None:
                raise ValueError("engine 'disaggregated' needs 'prefill', 'decode' and 'link'")
        elif self.engine == "fitted":
            if self.fitted is None:
                raise ValueError("engine 'fitted' needs 'fitted' (its figures: loadgen calibrate writes them)")
        elif self.hardware is None:
            raise ValueError(f"engine '{self.engine}' needs 'hardware' (one of: {', '.join(profile_names())})")
        else:
            self.single()  # validates the profile now, so that a bad one is an input error
        try:
            model_profile(self.model)
        except KeyError as e:
            raise ValueError(str(e).strip("'\"")) from None
        except TypeError as e:
            raise ValueError(str(e)) from None
        return self

    def single(self) -> EngineSpec:
        assert self.hardware is not None and self.engine in ("gpu", "groq")
        return EngineSpec(
            engine=self.engine, hardware=self.hardware, hardware_overrides=self.hardware_overrides, serving=self.serving
        )

    def model_profile(self) -> ModelConfig:
        m = model_profile(self.model)
        if self.fitted is not None and self.fitted.max_context is not None:
            return m.model_copy(update={"max_context": self.fitted.max_context})
        return m


class LlamaCppLaunch(Strict):
    """A real llama.cpp engine (its own C++ server, from the xllamacpp wheel) that loadgen starts for a run."""

    kind: Literal["llamacpp"]
    model: str | None = None  # a GGUF file (relative to the endpoint file); none: the packaged Gemma-3-270M
    alias: str | None = None  # the model name it serves; default: the file's name without .gguf
    threads: PositiveInt = 1  # CPU threads for prefill and decode
    slots: PositiveInt = 4  # requests decoded together (continuous batching): llama-server's --parallel
    ctx: PositiveInt = 8192  # KV-cache tokens over all slots (each slot holds ctx / slots): --ctx-size
    batch: PositiveInt = 2048  # prompt tokens per llama_decode call at most: --batch-size
    # One KV buffer for all slots (--kv-unified). Without it (llama.cpp's default with --parallel), each slot has
    # its own, and a decode step's cost depends on which slots hold its sequences, not only on how many: on the
    # packaged engine, 4 sequences took 66-99 ms a step by their slots, 67-73 with one buffer.
    kv_unified: bool = False
    http_threads: PositiveInt = 8  # HTTP threads beyond one per slot, for scrapes and requests that wait
    slot_save_path: str | None = None  # where POST /slots/{id}?action=save writes KV files (none: disabled)
    cores: list[NonNegativeInt] | None = None  # CPUs to pin the engine to (Linux), e.g. off the load generator's
    seed: int = 0


class PairSide(Strict):
    """One engine of a prefill/decode pair: its threads, slots and KV cache, as a single engine's."""

    threads: PositiveInt = 1
    slots: PositiveInt = 4
    ctx: PositiveInt = 8192
    batch: PositiveInt = 2048


class LlamaCppPairLaunch(Strict):
    """Prefill on one llama.cpp engine, decode on another: loadgen starts both and a proxy in front of them that
    moves each request's KV cache from the first to the second (slot save, a file copy, slot restore)."""

    kind: Literal["llamacpp-pd"]
    model: str | None = None  # one GGUF file for both (relative to the endpoint file); none: the packaged Gemma
    alias: str | None = None
    prefill: PairSide = PairSide()
    decode: PairSide = PairSide()
    link_gbps: PositiveFloat | None = None  # the KV file's copy takes at least its bits over this; none: a disk copy
    seed: int = 0

    def side(self, which: Literal["prefill", "decode"], slot_save_path: str, cores: list[int] | None) -> LlamaCppLaunch:
        """One of the two engines, as a single engine's launch that saves and restores slots in `slot_save_path`."""
        s = self.prefill if which == "prefill" else self.decode
        return LlamaCppLaunch(
            kind="llamacpp", model=self.model, alias=self.alias, seed=self.seed, slot_save_path=slot_save_path,
            cores=cores, **s.model_dump(),
        )  # fmt: skip


class PriceSpec(Strict):
    """What the endpoint costs to run, for the capacity table's cost per million output tokens."""

    per_hour: PositiveFloat
    currency: str = "USD"
    source: str  # where the figure comes from (a public price list and its date)


class EndpointSpec(Strict):
    name: str
    url: str | None = None
    model: str | None = None  # none: the one the server lists (GET /v1/models), or the emulated model profile
    server: Server | None = None  # none: detected where the server says, else assumed with a note
    api_key_env: str | None = None
    emulate: EmulateSpec | None = None
    launch: LlamaCppLaunch | LlamaCppPairLaunch | None = Field(default=None, discriminator="kind")
    price: PriceSpec | None = None

    @model_validator(mode="after")
    def _reachable(self) -> EndpointSpec:
        given = [k for k in ("url", "emulate", "launch") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give one of 'url' (a running server), 'emulate' (the built-in emulator's model) or 'launch' (a "
                f"real engine loadgen starts), got {' and '.join(given) or 'none'}"
            )
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self

    @property
    def emulated(self) -> bool:
        return self.emulate is not None

    @property
    def known_server(self) -> str | None:
        """The family as the file says, or as loadgen knows it because it starts the server itself."""
        if self.server is not None:
            return self.server
        if self.emulate is not None:  # an emulator in vLLM's shape is the emulator; in another, that family
            return "emulator" if self.emulate.server == "vllm" else self.emulate.server
        return "llamacpp" if self.launch is not None else None

    @property
    def started(self) -> bool:
        """loadgen starts this endpoint's server for a run (the emulator, or an engine it launches)."""
        return self.url is None
