"""The emulator: its performance models, its real-time schedulers, its OpenAI API, its fault knobs."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from conftest import ROOT, loadgen, served
from loadgen.emulator.engine import Seq, build
from loadgen.emulator.prefix import PrefixCache, SlotCache, block_keys
from loadgen.hardware import perf
from loadgen.hardware.profiles import load_profile
from loadgen.launch.background import BackgroundServer
from loadgen.server_metrics.scrape import parse
from loadgen.spec import load_endpoint
from loadgen.spec.endpoint import EmulateSpec, EndpointSpec

if TYPE_CHECKING:
    import openai

M = load_profile("llama-2-7b")
H100 = load_profile("h100-sxm")
GROQ = load_profile("groqrack-72")


def test_gpu_step_time_grows_with_batch_and_context_as_the_model_says():
    one = perf.gpu_step_s(H100, M, [], [128])
    assert perf.gpu_step_s(H100, M, [], [128] * 64) > one  # more sequences: more KV reads and overhead
    assert perf.gpu_step_s(H100, M, [], [2048]) > perf.gpu_step_s(H100, M, [], [128])  # longer context
    # A batch-1 decode step reads the weights once: ~13.48 GB / (0.69 x 3.35 TB/s) + overhead.
    assert one == pytest.approx(M.weight_bytes / (0.69 * 3.35e12) + 1.4e-3 + 0.045e-3, rel=0.02)
    # Prefill of many tokens is compute-bound and scales with them.
    a, b = perf.gpu_step_s(H100, M, [(2048, 0)], []), perf.gpu_step_s(H100, M, [(4096, 0)], [])
    assert 1.9 < b / a < 2.3


def test_kv_cache_sizes_follow_the_model_config():
    assert M.kv_bytes_per_token == 512 * 1024
    gqa = M.model_copy(update={"kv_heads": 8})
    assert gqa.kv_bytes_per_token == 128 * 1024  # grouped-query attention shrinks the cache
    cap = perf.gpu_kv_capacity_tokens(H100, M, 0.9)
    assert 100_000 < cap < 125_000  # docs/hardware.md: ~110-120k cached tokens on 80 GB


def test_groqrack_decode_and_prefill_modes():
    assert perf.groq_token_s(GROQ, M) == pytest.approx(12.9e-3 / 3, rel=0.02)  # the study's "3x lower than A100"
    vendor = GROQ.model_copy(update={"hop_latency_us": 10.5})
    assert 1 / perf.groq_token_s(vendor, M) == pytest.approx(750, rel=0.03)
    serial = perf.groq_prefill_s(GROQ, M, 512)
    piped = perf.groq_prefill_s(GROQ.model_copy(update={"prefill_mode": "pipelined"}), M, 512)
    assert serial == pytest.approx(512 * perf.groq_token_s(GROQ, M)) and piped < serial / 50
    # Padded to a compiled input length: every prefill costs that length's, whatever the prompt.
    padded = GROQ.model_copy(update={"prefill_mode": "padded", "padded_prompt_tokens": 2048})
    full = perf.groq_prefill_s(GROQ.model_copy(update={"prefill_mode": "pipelined"}), M, 2048)
    assert perf.groq_prefill_s(padded, M, 16) == perf.groq_prefill_s(padded, M, 2048) == pytest.approx(full)
    groq = build(emulate(engine="groq", hardware="groqrack-72", hardware_overrides={"prefill_mode": "padded"}))
    assert groq.fits(4096, 1) and not groq.fits(4097, 1)  # the compiled shape takes nothing longer


def test_a_step_with_prefill_work_pays_the_prefill_overhead():
    decode_only = perf.gpu_step_s(H100, M, [], [128])
    with_prefill = perf.gpu_step_s(H100, M, [(1, 127)], [])
    # The same one token of work and the same KV read, plus the fixed cost of an eager prefill step.
    assert with_prefill - decode_only == pytest.approx(H100.prefill_overhead_ms / 1000, rel=0.01)


def test_kv_transfer_whole_and_layerwise():
    whole = perf.kv_transfer_s(M, 512, 100, 0.01, 0.0, False, 0.05)
    assert whole == pytest.approx(256 * 2**20 * 8 / 100e9 + 1e-5)  # docs/hardware.md: 21.5 ms
    layerwise = perf.kv_transfer_s(M, 512, 100, 0.01, 0.0, True, 0.05)
    assert layerwise < whole and layerwise >= whole / 32


def emulate(**kw) -> EmulateSpec:
    return EmulateSpec.model_validate(kw)


async def drive(backend, requests: list[tuple], sent: list[float] | None = None) -> list[list[float]]:
    """Submit (prompt, target, at_s[, block keys]) requests and return each one's token release times, on the
    clock of the first submission; `sent`, where given, gets each request's submission time on that clock (a busy
    loop wakes a sleeper late)."""
    loop = asyncio.get_running_loop()
    backend.start()
    t0 = loop.time()
    if sent is not None:
        sent[:] = [0.0] * len(requests)

    async def one(i: int, prompt: int, target: int, at: float, keys: tuple = ()) -> list[float]:
        await asyncio.sleep(at)
        seq = Seq(prompt, target, keys)
        if sent is not None:
            sent[i] = loop.time() - t0
        backend.submit(seq)
        times = []
        while n := await seq.take():
            times += [loop.time() - t0] * n
        return times

    return await asyncio.gather(*(one(i, *r) for i, r in enumerate(requests)))


def test_a_full_kv_cache_queues_requests():
    # Room for 600 tokens of KV: two requests of 200 + 100 fit, the third waits for one to finish.
    mem = M.weight_bytes / 0.9 + 600 * M.kv_bytes_per_token / 0.9
    backend = build(emulate(engine="gpu", hardware="h100-sxm", hardware_overrides={"memory_bytes": mem}))
    a, b, c = asyncio.run(drive(backend, [(200, 100, 0), (200, 100, 0), (200, 100, 0.001)]))
    assert len(a) == len(b) == len(c) == 100
    assert c[0] > min(a[-1], b[-1])
    assert b[0] < a[-1]  # the first two ran together


def test_continuous_batching_runs_requests_together_and_groq_serialises():
    gpu = build(emulate(engine="gpu", hardware="h100-sxm"))
    a, b = asyncio.run(drive(gpu, [(64, 20, 0), (64, 20, 0.001)]))
    assert b[0] < a[-1]
    groq = build(emulate(engine="groq", hardware="groqrack-72", hardware_overrides={"hop_latency_us": 1}))
    a, b = asyncio.run(drive(groq, [(4, 10, 0), (4, 10, 0.001)]))
    assert b[0] > a[-1]  # one request at a time, in arrival order


def test_decode_steps_release_at_the_modelled_pace():
    gpu = build(emulate(engine="gpu", hardware="h100-sxm", hardware_overrides={"overhead_ms": 10}))
    (t,) = asyncio.run(drive(gpu, [(16, 30, 0)]))
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    step = perf.gpu_step_s(load_profile("h100-sxm", {"overhead_ms": 10}), M, [], [40])
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(step, rel=0.15)


def test_disaggregated_link_delays_the_hand_over():
    prefill = {"engine": "gpu", "hardware": "h100-sxm"}
    decode = {"engine": "gpu", "hardware": "h100-sxm"}
    slow = build(emulate(engine="disaggregated", prefill=prefill, decode=decode, link={"gbps": 10, "latency_ms": 5}))
    fast = build(emulate(engine="disaggregated", prefill=prefill, decode=decode, link={"gbps": 1000}))
    ((s,),) = [asyncio.run(drive(slow, [(256, 2, 0)]))]
    ((f,),) = [asyncio.run(drive(fast, [(256, 2, 0)]))]
    expected = 256 * M.kv_bytes_per_token * 8 / 10e9 + 5e-3 - 256 * M.kv_bytes_per_token * 8 / 1000e9
    assert s[0] - f[0] == pytest.approx(expected, rel=0.15)


def test_prefix_cache_keys_blocks_by_their_whole_prefix_and_evicts_the_least_recent():
    a = block_keys(list(range(40)), 16)  # two full blocks; the last 8 tokens are no block
    assert len(a) == 2 and block_keys(list(range(32)) + [99] * 8, 16) == a
    assert block_keys([7] + list(range(1, 40)), 16)[1] != a[1]  # same second block, other first: another key
    cache = PrefixCache(capacity_blocks=3, block=16)
    assert cache.lookup(a, 40) == 0
    cache.insert(a)
    assert cache.lookup(a, 40) == 32 and cache.lookup(a, 32) == 31  # the last prompt token is always computed
    cache.insert(block_keys(list(range(100, 132)), 16))  # two more blocks: the oldest (a's first) goes
    assert cache.lookup(a, 40) == 0 and (cache.queried_tokens, cache.hit_tokens) == (40 * 3 + 32, 32 + 31)


def test_slot_cache_reuses_a_conversation_until_another_prompt_takes_its_slot():
    """As the llama.cpp engine showed it (two slots here): a next turn finds its previous prompt less 5 tokens;
    a new conversation with the same system prompt takes the idle slot it shares most with, and the conversation
    whose slot it was then finds only the system prompt."""

    def seq(tokens: list[int], answer: int = 10) -> Seq:
        keys = block_keys(tokens + [-1] * (answer - 1), 1)
        return Seq(len(tokens), answer, keys[: len(tokens)], keys)

    system, other = list(range(100)), list(range(1000, 1100))
    cache = SlotCache(slots=2, kept_offset=-5)
    first = seq(system + list(range(200, 250)))  # a conversation's first turn: nothing cached
    assert cache.admitted(first) == 0
    cache.retired(first)
    second = seq(system + list(range(200, 250)) + [-1] * 9 + list(range(300, 340)))  # its next turn
    assert cache.admitted(second) == 150 - 5
    cache.retired(second)
    elsewhere = seq(other + list(range(400, 450)))  # shares nothing: the least recently used slot, untouched
    assert cache.admitted(elsewhere) == 0
    cache.retired(elsewhere)
    rival = seq(system + list(range(500, 550)))  # the same system prompt: the conversation's slot
    assert cache.admitted(rival) == 100
    cache.retired(rival)
    third = seq(system + list(range(200, 250)) + [-1] * 9 + list(range(300, 340)) + [-1] * 9 + [7])
    assert cache.admitted(third) == 100  # its turns are gone: the system prompt only
    assert (cache.queried_tokens, cache.hit_tokens) == (150 + 199 + 150 + 150 + 209, 145 + 100 + 100)


def test_slot_cache_picks_slots_as_llamacpp_does():
    """llama.cpp's get_available_slot: of equal matches the first slot, and with no match the slot released
    longest ago, the last of equals (never-used slots first): a new conversation with a shared system prompt takes
    the first slot holding it, though that slot's conversation was the one released last."""

    def seq(tokens: list[int]) -> Seq:
        keys = block_keys(tokens + [-1], 1)
        return Seq(len(tokens), 2, keys[: len(tokens)], keys)

    system = list(range(100))
    cache = SlotCache(slots=3)
    a, b = seq(system + [200]), seq(system + [300])
    assert (cache.admitted(a), cache.owner[id(a)]) == (0, 2)  # nothing held: the last never-used slot
    assert (cache.admitted(b), cache.owner[id(b)]) == (0, 1)  # slot 2 is busy (held nothing yet): slot 1
    cache.retired(b)
    cache.retired(a)  # released after b: slot 1 (b's) was released longest ago
    c = seq(system + [400])
    assert (cache.admitted(c), cache.owner[id(c)]) == (100, 1)  # equal matches in slots 1 and 2: the first
    d = seq(list(range(1000, 1100)))  # shares nothing: the slot released longest ago, slot 0 (never used)
    assert (cache.admitted(d), cache.owner[id(d)]) == (0, 0)


@pytest.mark.exclusive  # TTFTs in this process's event loop, to a quarter
def test_cached_prefixes_skip_prefill_and_a_kv_transfer_the_decode_side_holds():
    keys = tuple(block_keys(list(range(2048)), 16))
    gpu = build(emulate(engine="gpu", hardware="h100-sxm"))
    sent: list[float] = []
    cold, warm = asyncio.run(drive(gpu, [(2048, 2, 0, keys), (2048, 2, 0.3, keys)], sent))
    ttft = [cold[0] - sent[0], warm[0] - sent[1]]
    assert ttft[1] < 0.25 * ttft[0]  # 2047 of 2048 tokens cached: one token's prefill, attending to all
    off = build(emulate(engine="gpu", hardware="h100-sxm", serving={"enable_prefix_caching": False}))
    cold, again = asyncio.run(drive(off, [(2048, 2, 0, keys), (2048, 2, 0.3, keys)], sent))
    assert again[0] - sent[1] == pytest.approx(cold[0] - sent[0], rel=0.1)
    gpu_side = {"engine": "gpu", "hardware": "h100-sxm"}
    pair = build(emulate(engine="disaggregated", prefill=gpu_side, decode=gpu_side, link={"gbps": 10}))
    first, second = asyncio.run(drive(pair, [(2048, 2, 0, keys), (2048, 2, 1.5, keys)]))
    transfer = 2048 * M.kv_bytes_per_token * 8 / 10e9  # 0.86 s: the first pays it, the second holds it all
    assert first[0] > transfer and second[0] - 1.5 < 0.1 * transfer


@pytest.fixture(scope="module")
def server():
    endpoint = load_endpoint(ROOT / "endpoints" / "emulated-h100.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        with BackgroundServer(endpoint, Path(tmp)) as emu:
            yield emu.url


def client(url: str) -> openai.OpenAI:
    import openai  # here, not at the top: every worker collects this module, and openai takes 0.5 s to import

    return openai.OpenAI(base_url=url, api_key="none", max_retries=0)


def test_openai_client_streams_chat_with_usage(server):
    stream = client(server).chat.completions.create(
        model="llama-2-7b",
        messages=[{"role": "user", "content": "one two three"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 12
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        3,
        12,
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_openai_client_completions_with_token_ids_and_without_stream(server):
    c = client(server)
    out = c.completions.create(
        model="llama-2-7b", prompt=[1, 2, 3, 4, 5], max_tokens=4, extra_body={"ignore_eos": True}
    )
    assert out.usage.prompt_tokens == 5 and out.usage.completion_tokens == 4 and len(out.choices[0].text.split()) == 4
    stream = c.completions.create(
        model="llama-2-7b", prompt="a b", max_tokens=3, stream=True, extra_body={"ignore_eos": True}
    )
    assert "".join(x.choices[0].text for x in stream if x.choices).split() == ["the", "model", "says"]


@pytest.mark.exclusive  # a cached prompt's first token in half the time
def test_a_shared_prompt_prefix_is_reported_cached_and_answers_sooner(server):
    words = [f"w{i}" for i in range(2048)]
    c = client(server)

    def ask(prompt: list[str]) -> tuple[float, int]:
        t = time.perf_counter()
        stream = c.chat.completions.create(
            model="llama-2-7b",
            messages=[{"role": "user", "content": " ".join(prompt)}],
            max_tokens=2,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t
            usage = chunk.usage
        assert first is not None and usage is not None
        return first, usage.prompt_tokens_details.cached_tokens

    ask(["warm", "up", "the", "connection"])
    cold_s, cold_cached = ask(words)
    warm_s, warm_cached = ask(words[:1843] + [f"new{i}" for i in range(205)])  # 90% shared
    assert cold_cached == 0 and warm_cached == 1840  # 115 whole blocks of 16
    assert warm_s < 0.5 * cold_s


def test_min_tokens_and_ignore_eos_are_honoured(server):
    c = client(server)

    def length(**extra) -> int:
        out = c.completions.create(model="llama-2-7b", prompt="hi", max_tokens=160, extra_body=extra)
        return out.usage.completion_tokens

    with ThreadPoolExecutor(16) as pool:
        free = list(pool.map(lambda _: length(), range(16)))
        floor = list(pool.map(lambda _: length(min_tokens=120), range(5)))
    # Without either option the emulated model sometimes stops on its own (natural lengths have mean 256:
    # each of 16 stops before 160 tokens with probability 46%, drawn from the emulator's fixed seed).
    assert min(free) < 160
    assert min(floor) >= 120
    assert length(ignore_eos=True) == 160


def test_openai_style_errors(server):
    import openai

    c = client(server)
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="gpt-9", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        c.completions.create(model="llama-2-7b", prompt=list(range(4000)), max_tokens=200)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="llama-2-7b", messages=[], max_tokens=1)
    req = urllib.request.Request(server + "/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400


def test_models_health_and_metrics(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["llama-2-7b"]
    base = server.removesuffix("/v1")
    assert urllib.request.urlopen(base + "/health").status == 200
    text = urllib.request.urlopen(base + "/metrics").read().decode()
    names = {name for _, name, _, _ in parse(text, 0.0)}  # Prometheus text, as a maintained parser reads it
    assert names >= {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "loadgen_emulator_step_release_error_ms",
    }


def test_an_emulator_in_llamacpps_shape_is_detected_and_its_timings_stored_as_the_real_engines(write, tmp_path):
    """`emulate: {server: llamacpp}` speaks llama.cpp's shape: given only its URL, loadgen detects the family from
    GET /props, and stores the emulated engine's own timings per request as it stores the real engine's
    (test_llamacpp_timings.py); its /metrics has llama.cpp's names."""
    ep = write("ep.yaml", "name: emu-lc\nemulate: {engine: gpu, hardware: h100-sxm, server: llamacpp}\n")
    db = tmp_path / "r.duckdb"
    with served(ep) as url:
        w = write(
            "w.yaml",
            f"name: emu-lc\nendpoint: {url}\napi: chat\nload: {{arrival: closed, concurrency: 1}}\n"
            "requests: {prompt_tokens: 64, output_tokens: 8}\nstop: {requests: 4}\n",
        )
        res = loadgen("run", str(w), "--db", str(db))
        text = urllib.request.urlopen(url.removesuffix("/v1") + "/metrics").read().decode()
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    endpoint = json.loads(con.execute("SELECT spec FROM runs").fetchone()[0])["endpoint"]
    assert (endpoint["server"], endpoint["detected"]["server"]) == ("llamacpp", "GET /props")
    rows = con.execute(
        "SELECT status, output_tokens, ttft_ms, server_prefill_ms, (last_token_s - first_token_s) * 1000, "
        "server_decode_ms FROM requests"
    ).fetchall()
    assert len(rows) == 4
    for status, output, ttft, prefill, decode_span, decode in rows:
        assert (status, output) == ("ok", 8) and 0 < prefill <= ttft, rows
        assert decode == pytest.approx(decode_span, abs=5.0), rows  # the server's and loadgen's clocks agree
    names = {name for _, name, _, _ in parse(text, 0.0)}
    assert names >= {
        "llamacpp:prompt_tokens_total",
        "llamacpp:prompt_tokens_cached_total",
        "llamacpp:tokens_predicted_total",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
    }


def test_shipped_endpoint_files_are_valid():
    for path in sorted((ROOT / "endpoints").glob("*.yaml")):
        ep = load_endpoint(path)
        assert isinstance(ep, EndpointSpec) and (ep.url or ep.emulate or ep.launch)
