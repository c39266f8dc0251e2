"""`loadgen calibrate`: a fitted twin recovers the figures a synthetic database was made from, says which stages a
database lacks, and, calibrated from the real engine, serves a run whose figures are the engine's."""

from __future__ import annotations

import asyncio

import duckdb
import numpy as np
import orjson
import pytest
import yaml

from conftest import loadgen
from loadgen.calibrate.fit import NotEnough, fit
from loadgen.calibrate.measured import Stage, http_ms
from loadgen.calibrate.simulate import replay
from loadgen.emulator.engine import FittedEngine, Seq
from loadgen.hardware.perf import fitted_step_s, piecewise
from loadgen.hardware.profiles import model_profile
from loadgen.spec import load_endpoint
from loadgen.spec.endpoint import FittedSpec

# The truth the synthetic database is made from: prefill 10 ms a step + 2 ms a token, 5 ms before the engine.
STEP_MS, PER_TOKEN_MS, REQUEST_MS = 10.0, 2.0, 5.0
GATHER_MS = 0.5  # a decode stage's users send this far apart, and the server prefills them together


def synthetic(
    path,
    decode: dict,
    prefill: tuple[int, ...] = (64, 256, 1024),
    slots: int | None = 8,
    prefill_ms=lambda p: STEP_MS + PER_TOKEN_MS * p,
    one_at_a_time: bool = False,
    endpoint: dict | None = None,
    cache_config: dict | None = None,
    together_ms: float | None = None,
):
    """A database in the store's shape (the columns the fit reads) whose requests took exactly the truth's times.
    `decode`: step ms per batch, or per (batch, prompt tokens) for a stage at another context (32 by default);
    `one_at_a_time`: a decode stage's users wait for each other's whole answers (a server that does not batch);
    `endpoint`: the stored endpoint instead of a launched llama.cpp; `cache_config`: vLLM's cache_config_info;
    `together_ms`: a decode stage's users' prompts prefilled in one step, where each prompt beyond the first
    costs this much more (their first tokens); else their first tokens are a lone prefill's."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE runs (run_id VARCHAR, endpoint VARCHAR, started_at DOUBLE, spec VARCHAR)")
    con.execute("CREATE TABLE stages (run_id VARCHAR, stage VARCHAR, phase VARCHAR, concurrency INT, spec JSON)")
    con.execute(
        "CREATE TABLE requests (run_id VARCHAR, request_id INT, stage VARCHAR, status VARCHAR, warmup BOOL, "
        "sent_s DOUBLE, prompt_tokens INT, output_tokens INT, ttft_ms DOUBLE, tpot_ms DOUBLE, "
        "server_prefill_ms DOUBLE, first_token_s DOUBLE, last_token_s DOUBLE)"
    )
    con.execute("CREATE TABLE events (run_id VARCHAR, request_id INT, idx INT, itl_ms DOUBLE)")
    launch = {"kind": "llamacpp", "slots": slots, "ctx": 4096, "batch": 2048} if slots else None
    spec = {"endpoint": endpoint or {"name": "real", "server": "llamacpp", "model": "m", "launch": launch}}
    con.execute("INSERT INTO runs VALUES ('r1', 'real', 0, ?)", [orjson.dumps(spec).decode()])
    if cache_config is not None:
        con.execute(
            "CREATE TABLE server_metrics (run_id VARCHAR, t_s DOUBLE, name VARCHAR, labels VARCHAR, value DOUBLE)"
        )
        con.execute(
            "INSERT INTO server_metrics VALUES ('r1', 0, 'vllm:cache_config_info', ?, 1)",
            [orjson.dumps({k: str(v) for k, v in cache_config.items()}).decode()],
        )
    rid = 0
    for p in prefill:
        con.execute("INSERT INTO stages VALUES ('r1', ?, 'prefill', 1, '{}')", [f"p{p}"])
        for _ in range(3):
            server = prefill_ms(p)
            con.execute(
                "INSERT INTO requests VALUES ('r1', ?, ?, 'ok', false, ?, ?, 1, ?, NULL, ?, ?, ?)",
                [rid, f"p{p}", rid, p, server + REQUEST_MS, server, *[rid + (server + REQUEST_MS) / 1000] * 2],
            )
            rid += 1
    for key, ms in decode.items():
        b, p = key if isinstance(key, tuple) else (key, 32)
        name = f"b{b}" if p == 32 else f"b{b}-{p}"
        con.execute("INSERT INTO stages VALUES ('r1', ?, 'decode', ?, '{}')", [name, b])
        server = prefill_ms(p)  # at batch 1; beyond it TTFT is not what the fit reads
        wave = rid
        each = (server + 15 * ms) / 1000  # one whole answer
        for i in range(b):  # sent GATHER_MS apart, all prefilled in one step (or, one at a time, each in turn)
            ttft = server + REQUEST_MS + (i * each * 1000 if one_at_a_time else 0)
            if together_ms is not None:
                ttft = prefill_ms(p * b) + together_ms * (b - 1) + REQUEST_MS
            first = wave + (i * each if one_at_a_time else 0) + 0.5
            con.execute(
                "INSERT INTO requests VALUES ('r1', ?, ?, 'ok', false, ?, ?, 16, ?, ?, ?, ?, ?)",
                [rid, name, wave + i * GATHER_MS / 1000, p, ttft, ms, server, first, first + 15 * ms / 1000],
            )
            con.executemany("INSERT INTO events VALUES ('r1', ?, ?, ?)", [(rid, i, ms) for i in range(1, 16)])
            rid += 1
    for col in (
        "session BIGINT",
        "parent_request_id BIGINT",
        "server_prompt_tokens INT",
        "cached_tokens INT",
        "end_s DOUBLE",
    ):
        con.execute(f"ALTER TABLE requests ADD COLUMN {col}")
    con.close()
    return path


def conversations(path, turns: list[tuple[int, int]]) -> None:
    """Add to a synthetic database conversation turns (the previous prompt, the cached tokens of the next)."""
    con = duckdb.connect(str(path))
    for n, (prev, cached) in enumerate(turns):
        rid = 1000 + 2 * n
        for i, (prompt, hit, parent) in enumerate([(prev, 0, None), (prev + 60, cached, rid)]):
            con.execute(
                "INSERT INTO requests (run_id, request_id, stage, status, warmup, sent_s, prompt_tokens, "
                "output_tokens, ttft_ms, session, parent_request_id, server_prompt_tokens, cached_tokens) "
                "VALUES ('r1', ?, 'talk', 'ok', false, ?, ?, 16, 100, ?, ?, ?, ?)",
                [rid + i, 500 + rid + i, prompt - 3, n, parent, prompt, hit],
            )
    con.close()


def test_the_fit_recovers_the_truth(tmp_path):
    """Prefill per token and per step, the per-request cost, the slots and the per-slot context come back; a decode
    linear in the batch is fitted as its line, one that is not (llama.cpp's on one thread) as its table."""
    db = synthetic(tmp_path / "line.duckdb", {1: 20.0, 2: 30.0, 4: 50.0, 8: 90.0})
    f, rows = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert f.prefill_step_ms == pytest.approx(STEP_MS, abs=0.01)
    assert f.prefill_ms_per_token == pytest.approx(PER_TOKEN_MS, abs=1e-3)
    assert f.request_ms == pytest.approx(REQUEST_MS)
    assert f.gather_ms == pytest.approx(GATHER_MS * 7)  # the widest wave batched: 8 users' sends
    assert (f.slots, f.kv_tokens, f.max_context) == (8, 4096, 512)
    assert f.calibration is not None and f.calibration.decode_form.startswith("line")
    assert f.calibration.timings == "server" and f.calibration.prompt_tokens == (32, 1024)
    assert [piecewise(b, f.decode_step_ms) for b in (1, 3, 8, 16)] == pytest.approx([20, 40, 90, 170], abs=0.01)
    # Replayed one request at a time, each prefill stage's TTFT is the truth's (no decode runs beside it).
    for r in rows[:3]:
        assert r.ttft_error == pytest.approx(0, abs=1e-3), r.stage.stage

    bent = {1: 23.0, 2: 48.0, 4: 93.0, 8: 109.0}  # measured on the packaged engine (docs/endpoints.md, "A real engine")
    db = synthetic(tmp_path / "bent.duckdb", bent)
    f, _ = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert f.calibration is not None and f.calibration.decode_form.startswith("table")
    assert f.decode_step_ms == bent


def test_the_prompt_cache_is_what_the_conversations_found(tmp_path):
    """llama.cpp keeps a turn's prompt per slot: the twin's slot keeps the median of what the turns that found
    their previous turn found, relative to it (here 5 tokens short); a turn whose slot another conversation took
    (only its 100-token system prompt found) does not count. The conversations' requests are no stage to replay."""
    db = synthetic(tmp_path / "talk.duckdb", {1: 20.0, 8: 90.0})
    conversations(db, [(225, 220), (270, 265), (387, 382), (300, 296), (271, 100)])
    f, rows = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert f.prompt_cache is not None and (f.prompt_cache.kind, f.prompt_cache.kept_offset) == ("slots", -5)
    assert f.calibration is not None and "median of 4 conversation turns" in f.calibration.prompt_cache
    assert "talk" not in [r.stage.stage for r in rows]
    bare = synthetic(tmp_path / "bare.duckdb", {1: 20.0, 8: 90.0})
    f, _ = fit(duckdb.connect(str(bare), read_only=True), "real", str(bare))
    assert f.prompt_cache is not None and f.prompt_cache.kept_offset == 0
    assert f.calibration is not None and "no conversation measured" in f.calibration.prompt_cache


def test_a_llamacpp_server_loadgen_did_not_start_says_its_limits(tmp_path):
    """A llama.cpp server measured by its URL (no launch): the slots and the context of a slot its GET /props
    said (stored as the run's endpoint limits) bound the twin; no --slots needed."""
    said = {"name": "real", "server": "llamacpp", "model": "m", "limits": {"slots": 4, "ctx_per_slot": 512}}
    db = synthetic(tmp_path / "props.duckdb", {1: 20.0, 4: 50.0}, slots=None, endpoint=said)
    f, _ = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert (f.slots, f.kv_tokens, f.max_context) == (4, 2048, 512)
    assert f.calibration is not None and "slots 4 from the server's GET /props" in f.calibration.limits
    assert "KV 2048 tokens from the server's GET /props (512 a slot" in f.calibration.limits


def test_a_database_without_enough_stages_says_which_to_add(tmp_path):
    db = synthetic(tmp_path / "one.duckdb", {1: 20.0}, prefill=(), slots=None)
    res = loadgen("calibrate", str(db), "--endpoint", "real", "--out", str(tmp_path / "twin.yaml"))
    assert res.returncode == 2, res.stdout
    said = " ".join(res.stderr.split())
    assert "prefill stages (phase: prefill, concurrency 1, output_tokens 1) at 2 or more prompt lengths" in said
    assert "decode stages (phase: decode, closed concurrency N) at 2 or more batches" in said
    assert "--slots" in said
    assert not (tmp_path / "twin.yaml").exists()


def test_the_written_twin_is_an_endpoint_file(tmp_path):
    """What calibrate writes loads as an endpoint: the fitted engine in llama.cpp's shape, with its provenance."""
    db = synthetic(tmp_path / "s.duckdb", {1: 20.0, 8: 90.0})
    out = tmp_path / "twin.yaml"
    res = loadgen("calibrate", str(db), "--endpoint", "real", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "p1024" in res.stdout and "TTFT p50 ms" in res.stdout
    ep = load_endpoint(out)
    assert ep.name == "real-twin" and ep.model == "m" and ep.known_server == "llamacpp"
    assert ep.emulate is not None and ep.emulate.engine == "fitted" and ep.emulate.fitted is not None
    assert ep.emulate.fitted.calibration is not None and ep.emulate.fitted.calibration.run_ids == ["r1"]
    assert ep.emulate.model_profile().max_context == 512
    stages = yaml.safe_load(out.read_text())["emulate"]["fitted"]["calibration"]["stages"]
    assert [s["stage"] for s in stages] == ["p64", "p256", "p1024", "b1", "b8"]


def test_slots_bound_the_twin_and_requests_beyond_them_wait():
    """Four users on two slots: the second pair's prefills wait for the first pair's answers (replayed on the
    fitted engine's own scheduler, on a virtual clock)."""
    fitted = FittedSpec(prefill_ms_per_token=1.0, decode_step_ms={1: 10.0, 2: 10.0}, slots=2)
    stage = Stage("r", "s", "decode", batch=4, requests=4, prompt=10, output=11, ttft_ms=1, tpot_ms=1, prefill_ms=None,
                  itl_ms=None)  # fmt: skip
    ttft, tpot = replay(fitted, stage)
    # Both slots prefill together (20 ms); the waiting pair starts after 20 + 10 x 10 ms of decode, and prefills.
    assert tpot == pytest.approx(10.0) and ttft == pytest.approx((20 + 140) / 2)
    wide, _ = replay(fitted.model_copy(update={"slots": 4}), stage)
    assert wide == pytest.approx(40)


def test_a_fitted_engine_needs_its_figures(write):
    ep = write("ep.yaml", "name: t\nemulate: {engine: fitted}\n")
    res = loadgen("validate", str(write("w.yaml", "name: w\nendpoint: ep.yaml\nstop: {requests: 1}\n")))
    assert res.returncode == 2 and "engine 'fitted' needs 'fitted'" in res.stderr, (ep, res.stderr)


def test_a_run_beyond_the_calibration_says_so(tmp_path, write):
    """Prompts shorter than any measured, and (open loop) more sequences than the measured batches: the run's note
    names both; a stage inside the range is not named."""
    db = synthetic(tmp_path / "s.duckdb", {1: 20.0, 4: 50.0}, prefill=(64, 256))
    twin = tmp_path / "twin.yaml"
    assert loadgen("calibrate", str(db), "--endpoint", "real", "--out", str(twin)).returncode == 0
    w = write(
        "w.yaml",
        f"name: beyond\nendpoint: {twin}\napi: completions\nrequests: {{prompt_tokens: 16, output_tokens: 4}}\n"
        "stages:\n"
        "  - {name: short, load: {arrival: closed, concurrency: 1}, stop: {requests: 2}}\n"
        "  - {name: inside, load: {arrival: closed, concurrency: 4}, requests: {prompt_tokens: 64},\n"
        "     stop: {requests: 4}}\n"
        "  - {name: open, load: {arrival: poisson, rate: 20}, requests: {prompt_tokens: 64}, stop: {requests: 2}}\n",
    )
    res = loadgen("run", str(w), "--db", str(tmp_path / "r.duckdb"))
    assert res.returncode == 0, res.stderr
    (note,) = duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True).execute("SELECT note FROM runs").fetchone()
    assert "stage short: the twin predicts beyond its calibration: prompts of 16-16 tokens (measured 32-256)" in note
    assert (
        "stage open: the twin predicts beyond its calibration: up to 8 sequences decoded together (measured 1-4)"
        in note
    )
    assert "stage inside" not in note


@pytest.mark.exclusive  # first tokens to 3 ms in this process's event loop
def test_an_idle_twin_gathers_requests_sent_together():
    """Two requests reaching an idle twin 1 ms apart: with gather_ms 3 both are prefilled in its first step (as
    llama.cpp prefilled a closed loop's users together); without, the second waits for the first's prefill. A lone
    request's TTFT is the same either way: the gathering is part of request_ms."""

    async def first_tokens(gather_ms: float, gap_s: float, n: int = 2) -> list[float]:
        f = FittedSpec(prefill_ms_per_token=1.0, decode_step_ms={1: 5.0, 2: 5.0}, slots=2, request_ms=4.0,
                       gather_ms=gather_ms)  # fmt: skip
        engine = FittedEngine(f, model_profile("llama-2-7b"))
        engine.start()
        loop = asyncio.get_running_loop()
        t0, firsts = loop.time(), []
        seqs = []
        for i in range(n):
            seq = Seq(40, 1)
            seq.on_tokens = lambda _n: firsts.append((loop.time() - t0) * 1000)
            engine.submit(seq)
            seqs.append(seq)
            if i < n - 1:
                await asyncio.sleep(gap_s)
        for seq in seqs:
            await seq.finished()
        engine._task.cancel()
        return firsts

    together = asyncio.run(first_tokens(3.0, 0.001))
    apart = asyncio.run(first_tokens(0.0, 0.001))
    # Together: one 80-token step after 4 ms; apart: 40 tokens, then the second's 40 after it.
    # The times since the first submit may come late by a loop's late wake-up (87.1 ms for 84 once in a suite);
    # apart, the first token comes 40 ms sooner.
    assert together[1] - together[0] == pytest.approx(0, abs=1.0) and together[0] == pytest.approx(84, abs=6)
    assert apart[1] - apart[0] == pytest.approx(40, abs=3)
    (lone,) = asyncio.run(first_tokens(3.0, 0, n=1))
    assert lone == pytest.approx(44, abs=6)


def test_a_cache_hit_costs_what_the_lone_hits_measured(tmp_path):
    """Lone prefills from a cached prefix that took 40 ms + 0.25 ms a cached token beyond the prefill line: the fit
    finds both; the twin's step charges them to the step where such a prefill starts, and only there."""
    from loadgen.calibrate.fit import Prefill, cache_hit_cost

    line = Prefill("line", STEP_MS, PER_TOKEN_MS)
    hits = [(n, c, STEP_MS + PER_TOKEN_MS * n + 40 + 0.25 * c) for n, c in ((60, 200), (80, 400), (50, 300))]
    ms, per_token, said = cache_hit_cost(hits, line)
    assert (ms, per_token) == (pytest.approx(40), pytest.approx(0.25)) and "3 lone ones" in said
    assert cache_hit_cost(hits[:2], line)[:2] == (0.0, 0.0)  # too few to tell
    f = FittedSpec(
        prefill_ms_per_token=1.0, decode_step_ms={1: 5.0}, slots=2, cache_hit_ms=40, cache_hit_ms_per_token=0.25
    )
    engine = FittedEngine(f, model_profile("llama-2-7b"))
    hit = Seq(260, 4)
    hit.cached = hit.prefilled = 200
    chunk = [(hit, 60)]
    assert engine.step_s(chunk, []) == pytest.approx((60 + 40 + 50) / 1000)
    hit.prefilled = 230  # a later chunk of the same prompt: no second charge
    assert engine.step_s([(hit, 30)], []) == pytest.approx(30 / 1000)
    assert fitted_step_s(f, [(60, 200)], []) == pytest.approx(0.06)  # no hit: the prefill line alone


def test_a_conversation_beyond_the_measured_context_is_named(tmp_path, write):
    from loadgen.calibrate.bounds import beyond
    from loadgen.spec import load_workload

    db = synthetic(tmp_path / "s.duckdb", {1: 20.0, 4: 50.0})
    twin = tmp_path / "twin.yaml"
    assert loadgen("calibrate", str(db), "--endpoint", "real", "--out", str(twin)).returncode == 0
    w = write(
        "w.yaml",
        f"name: long\nendpoint: {twin}\napi: chat\nload: {{arrival: closed, concurrency: 1}}\nstop: {{requests: 4}}\n"
        "sessions: {turns: 3, max_context: 4096}\n",
    )
    stages = load_workload(w)[0].stages
    assert beyond(stages, load_endpoint(twin)) == [
        "stage main: the twin predicts beyond its calibration: conversations of up to 4096 tokens of context "
        "(measured up to 1025)"
    ]


def test_the_decode_context_term_is_recovered(tmp_path):
    """Decode stages at batch 8 at two contexts (32- and 1024-token prompts, 16-token answers) tell the step's
    rise per context token a sequence; the step at no context is the line left. Without the second context the
    term is 0, and the calibration says why."""
    per_context = 0.0005  # ms a context token a sequence: the emulated A100's KV read is about this

    def step(b: int, prompt: int = 32) -> float:
        return 10 + 2 * b + per_context * b * (prompt + 8)  # 8: half the answer

    decode = {b: step(b) for b in (1, 4, 8)} | {(8, 1024): step(8, 1024)}
    db = synthetic(tmp_path / "ctx.duckdb", decode)
    f, _ = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert f.decode_ms_per_context_token == pytest.approx(per_context, rel=1e-3)
    assert [piecewise(b, f.decode_step_ms) for b in (1, 16)] == pytest.approx([12, 42], abs=0.01)
    assert f.calibration is not None and "from decode at batch 8 at 40, 1032 tokens" in f.calibration.decode_context
    # The twin's step decoding 8 sequences of 1,032 tokens is the truth's.
    twin = fitted_step_s(f, [], [1032] * 8)
    assert twin * 1000 == pytest.approx(step(8, 1024), rel=1e-3)

    db = synthetic(tmp_path / "one.duckdb", {b: step(b) for b in (1, 4, 8)})
    f, _ = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert f.decode_ms_per_context_token == 0
    assert f.calibration is not None and f.calibration.decode_context.startswith("0: no batch was measured at two")


def test_a_gpu_like_prefill_is_fitted_as_a_roofline():
    """A prefill that costs the same below 200 tokens (a GPU reading its weights) and 0.06 ms a token above: the
    roofline's form predicts the left-out lengths best, and its floor and slope come back; a line's does not."""
    from loadgen.calibrate.fit import _prefill

    px = np.array([64, 128, 256, 512, 1024, 2048], dtype=float)
    f, loo = _prefill(px, 5 + 0.06 * np.maximum(px, 200))
    assert f.form == "roofline" and loo["roofline"] < 0.01 < loo["line"]
    assert f.floor == pytest.approx(200, rel=0.1) and f.per_token == pytest.approx(0.06, rel=0.01)
    f, _ = _prefill(px, 5 + 0.06 * px)  # a line stays a line: more figures must predict better
    assert f.form == "line"


def test_a_server_that_does_not_batch_is_detected(tmp_path):
    """GroqRack-like decode stages (the step flat with the batch, the users' first tokens queued behind each
    other's whole answers) and nothing that says the slots: the fit detects one request at a time."""
    flat = {1: 20.0, 2: 20.0, 4: 20.0}  # an answer (300 ms) longer than a prompt (74 ms), as on a GroqRack
    db = synthetic(tmp_path / "groq.duckdb", flat, slots=None, one_at_a_time=True)
    f, rows = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert f.slots == 1 and f.calibration is not None and f.calibration.limits.startswith("slots 1 detected")
    assert all(abs(r.ttft_error) < 0.02 for r in rows), [(r.stage.stage, r.ttft_error) for r in rows]
    # The same steps with the users prefilled together: a batching server, whose slots nothing says.
    db = synthetic(tmp_path / "batched.duckdb", flat, slots=None)
    with pytest.raises(NotEnough, match="give --slots N"):
        fit(duckdb.connect(str(db), read_only=True), "real", str(db))


def test_an_emulated_vllm_endpoint_says_its_limits_and_policy(tmp_path):
    """A vLLM-shaped emulator's study: the KV capacity from its /metrics (vllm:cache_config_info), max_num_seqs,
    the step's token budget and the prefill-first policy from the endpoint file as stored; the twin's engine
    schedules prefill-first."""
    endpoint = {
        "name": "real",
        "model": "m",
        "emulate": {"engine": "gpu", "hardware": "a100-40gb",
                    "serving": {"max_num_seqs": 64, "max_num_batched_tokens": 8192, "chunked_prefill": False}},
    }  # fmt: skip
    db = synthetic(
        tmp_path / "vllm.duckdb", {1: 13.0, 8: 14.0}, slots=None, endpoint=endpoint,
        cache_config={"block_size": 16, "num_gpu_blocks": 100},
    )  # fmt: skip
    f, _ = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert (f.slots, f.kv_tokens, f.batch_tokens, f.max_context) == (64, 1600, 8192, None)
    assert not f.chunked_prefill and not f.serving().chunked_prefill
    c = f.calibration
    assert c is not None and "KV 1600 tokens from the server's /metrics" in c.limits
    assert c.policy.startswith("prefill-first") and "the endpoint file as stored" in c.policy
    engine = FittedEngine(f, model_profile("llama-2-7b"))
    assert engine.kv_capacity == 1600 and not engine.serving.chunked_prefill


def test_a_servers_ttft_histogram_takes_the_http_path_out_of_the_prefill(tmp_path):
    """A vLLM-shaped server sends no per-request timings, but its TTFT histogram leaves out the HTTP path and the
    tokenizing: read between scrapes where only lone requests got their first token (a decode wave's are left
    out), the client's TTFT less the server's is 5 ms + 0.002 ms a prompt token, which the twin's own server
    pays, so its prefill is the truth's and it adds no per-request cost. Without the histogram: the client's
    timings, that path inside the prefill."""
    endpoint = {"name": "real", "model": "m", "emulate": {"engine": "gpu", "hardware": "a100-40gb"}}
    db = synthetic(tmp_path / "vllm.duckdb", {1: 13.0, 8: 14.0}, slots=None, endpoint=endpoint)
    con = duckdb.connect(str(db))
    # No per-request timings; the path before the server's clock grows with the prompt (tokenizing).
    con.execute("UPDATE requests SET server_prefill_ms = NULL, ttft_ms = ttft_ms + 0.002 * prompt_tokens")
    f, _ = fit(con, "real", str(db))
    assert f.calibration is not None and f.calibration.http_ms is None
    assert f.prefill_step_ms == pytest.approx(STEP_MS + REQUEST_MS, abs=0.01)
    assert f.prefill_ms_per_token == pytest.approx(PER_TOKEN_MS + 0.002, abs=1e-3)
    con.execute("CREATE TABLE server_series (run_id VARCHAR, t_s DOUBLE, series VARCHAR, value DOUBLE)")
    firsts = con.execute("SELECT first_token_s, ttft_ms, prompt_tokens FROM requests ORDER BY first_token_s")
    total = count = 0.0
    scrapes = [("r1", 0.0, "ttft_seconds", 0.0), ("r1", 0.0, "ttft_count", 0.0)]
    for first, ttft, prompt in firsts.fetchall():
        total, count = total + (ttft - REQUEST_MS - 0.002 * prompt) / 1000, count + 1
        scrapes += [("r1", first + 1e-4, "ttft_seconds", total), ("r1", first + 1e-4, "ttft_count", count)]
    con.executemany("INSERT INTO server_series VALUES (?, ?, ?, ?)", scrapes)
    assert http_ms(con, "real") == pytest.approx((REQUEST_MS, 0.002))
    f, rows = fit(con, "real", str(db))
    assert f.calibration is not None and f.calibration.http_ms == pytest.approx((REQUEST_MS, 0.002))
    assert f.prefill_step_ms == pytest.approx(STEP_MS, abs=0.01) and f.request_ms == 0
    assert f.prefill_ms_per_token == pytest.approx(PER_TOKEN_MS, abs=1e-4)
    assert rows[0].stage.ttft_ms == pytest.approx(STEP_MS + PER_TOKEN_MS * 64)  # the server's own TTFT


def test_a_prompts_last_tokens_prefilled_apart_are_fitted_and_served(tmp_path):
    """A llama.cpp server that ends a step before a prompt's last 4 tokens and a ubatch (512) before those (its
    context checkpoints, for a sliding-window model, as its GET /props model file said): a lone prompt costs a
    step per stretch, and the fit finds the step and the token costs under that. On the twin, a prompt that
    arrives while another prefills joins the other's next step, the tail's too: both wait for that whole step,
    and the newcomer's own tail is a step after it (as the packaged engine did: a 160-token prompt's first token
    after 990 ms with a 112-token one sent 34 ms after it, 590 ms alone); a chat prompt brings only its first
    step, up to where its last user message begins."""
    said = {
        "name": "real", "server": "llamacpp", "model": "m",
        "limits": {"slots": 4, "ctx_per_slot": 2048, "prompt_tail": 4},
        "detected": {"prompt_tail": "GET /props model_path: sliding-window attention"},
    }  # fmt: skip

    def truth(p: int) -> float:
        return STEP_MS * (1 + (p > 4) + (p > 4 + 512)) + PER_TOKEN_MS * p

    db = synthetic(tmp_path / "tail.duckdb", {1: 20.0, 4: 50.0}, prefill=(64, 256, 512, 1024), slots=None,
                   endpoint=said, prefill_ms=truth)  # fmt: skip
    f, rows = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert (f.prompt_tail_tokens, f.checkpoint_ubatch_tokens) == (4, 512)
    assert f.prefill_step_ms == pytest.approx(STEP_MS, abs=0.01)
    assert f.prefill_ms_per_token == pytest.approx(PER_TOKEN_MS, abs=1e-3)
    assert f.calibration is not None
    assert "a prompt's last 4 tokens prefilled apart, and a step ending 512 tokens before them" in f.calibration.limits
    assert all(r.ttft_error == pytest.approx(0, abs=1e-3) for r in rows if r.stage.batch == 1)
    plain = {**said, "limits": {**said["limits"], "prompt_tail": 0}, "detected": {"prompt_tail": "GET /props x"}}
    db = synthetic(tmp_path / "plain.duckdb", {1: 20.0, 4: 50.0}, slots=None, endpoint=plain)
    g, _ = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert g.prompt_tail_tokens == 0 and g.calibration is not None
    assert "no prompt tokens apart, from GET /props x" in g.calibration.limits

    engine = FittedEngine(f.model_copy(update={"request_ms": 0.0, "gather_ms": 0.0}), model_profile("llama-2-7b"))

    def served(*arrivals: tuple[int, Seq]) -> list[list[tuple[int, int]]]:
        """Each step's prompt chunks, (which request, tokens), with each request submitted before step k."""
        steps, seqs = [], [q for _, q in arrivals]
        for q in seqs:
            q.on_tokens = lambda _n: None
        while len(steps) < 8 and not all(q.prefilled >= q.prompt for q in seqs):
            for k, q in arrivals:
                if k == len(steps):
                    engine.submit(q)
            steps.append(engine.plan())
            engine.complete(steps[-1])
        return [[(seqs.index(q), n) for q, n in s.prefill] for s in steps]

    assert served((0, Seq(1100, 1))) == [[(0, 584)], [(0, 512)], [(0, 4)]]
    first, second = Seq(160, 4), Seq(112, 4)
    assert served((0, first), (1, second)) == [[(0, 156)], [(0, 4), (1, 108)], [(1, 4)]]
    # the first's first token came at the end of the step that held the second's bulk
    assert first.generated == 2 and second.generated == 1
    # A chat prompt's first step ends where its last user message begins (after the template's first token in a
    # one-message prompt): joining another's tail step, it brings that one token, and delays it no more.
    chat = Seq(112, 4)
    chat.lead = 1
    assert served((0, Seq(160, 4)), (1, chat)) == [[(0, 156)], [(0, 4), (1, 1)], [(1, 107)], [(1, 4)]]


def test_prompts_ending_together_cost_each_its_first_token(tmp_path):
    """A closed loop's users are prefilled in one step, and each prompt beyond the first that ends there costs 15 ms
    more (its own first token's logits): the fit finds it from the decode stages' first tokens, and replays them."""
    db = synthetic(tmp_path / "together.duckdb", {1: 20.0, 2: 30.0, 4: 50.0, 8: 90.0}, together_ms=15.0)
    f, rows = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert f.prefill_ms_per_completion == pytest.approx(15.0, abs=0.5)
    assert f.calibration is not None and "each further prompt ending in a step 15" in f.calibration.prefill_form
    assert all(r.ttft_error == pytest.approx(0, abs=0.01) for r in rows), [(r.stage.stage, r.ttft_error) for r in rows]
    lone = fitted_step_s(f, [(32, 0)], [], completed=1)
    assert fitted_step_s(f, [(32, 0)] * 3, [], completed=3) - lone == pytest.approx(
        (2 * 32 * f.prefill_ms_per_token + 2 * f.prefill_ms_per_completion) / 1000, rel=1e-6
    )
