"""`loadgen calibrate`: a fitted twin recovers the figures a synthetic database was made from, says which stages a
database lacks, and, calibrated from the real engine, serves a run whose figures are the engine's."""

from __future__ import annotations

import asyncio

import duckdb
import orjson
import pytest
import yaml

from conftest import MINI_STUDY, loadgen
from loadgen.calibrate.fit import fit
from loadgen.calibrate.measured import Stage
from loadgen.calibrate.simulate import replay
from loadgen.emulator.engine import FittedEngine, Seq
from loadgen.hardware.perf import piecewise
from loadgen.hardware.profiles import model_profile
from loadgen.spec import load_endpoint
from loadgen.spec.endpoint import FittedSpec

# The truth the synthetic database is made from: prefill 10 ms a step + 2 ms a token, 5 ms before the engine.
STEP_MS, PER_TOKEN_MS, REQUEST_MS = 10.0, 2.0, 5.0
GATHER_MS = 0.5  # a decode stage's users send this far apart, and the server prefills them together


def synthetic(path, decode: dict[int, float], prefill: tuple[int, ...] = (64, 256, 1024), slots: int | None = 8):
    """A database in the store's shape (the columns the fit reads) whose requests took exactly the truth's times."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE runs (run_id VARCHAR, endpoint VARCHAR, started_at DOUBLE, spec VARCHAR)")
    con.execute("CREATE TABLE stages (run_id VARCHAR, stage VARCHAR, phase VARCHAR, concurrency INT)")
    con.execute(
        "CREATE TABLE requests (run_id VARCHAR, request_id INT, stage VARCHAR, status VARCHAR, warmup BOOL, "
        "sent_s DOUBLE, prompt_tokens INT, output_tokens INT, ttft_ms DOUBLE, tpot_ms DOUBLE, "
        "server_prefill_ms DOUBLE, first_token_s DOUBLE, last_token_s DOUBLE)"
    )
    con.execute("CREATE TABLE events (run_id VARCHAR, request_id INT, idx INT, itl_ms DOUBLE)")
    launch = {"kind": "llamacpp", "slots": slots, "ctx": 4096, "batch": 2048} if slots else None
    spec = {"endpoint": {"name": "real", "server": "llamacpp", "model": "m", "launch": launch}}
    con.execute("INSERT INTO runs VALUES ('r1', 'real', 0, ?)", [orjson.dumps(spec).decode()])
    rid = 0
    for p in prefill:
        con.execute("INSERT INTO stages VALUES ('r1', ?, 'prefill', 1)", [f"p{p}"])
        for _ in range(3):
            server = STEP_MS + PER_TOKEN_MS * p
            con.execute(
                "INSERT INTO requests VALUES ('r1', ?, ?, 'ok', false, ?, ?, 1, ?, NULL, ?, ?, ?)",
                [rid, f"p{p}", rid, p, server + REQUEST_MS, server, *[rid + (server + REQUEST_MS) / 1000] * 2],
            )
            rid += 1
    for b, ms in decode.items():
        con.execute("INSERT INTO stages VALUES ('r1', ?, 'decode', ?)", [f"b{b}", b])
        server = STEP_MS + PER_TOKEN_MS * 32  # at batch 1; beyond it TTFT is not what the fit reads
        wave = rid
        last = wave + 0.5 + 15 * ms / 1000
        for i in range(b):  # sent GATHER_MS apart, all prefilled in one step
            con.execute(
                "INSERT INTO requests VALUES ('r1', ?, ?, 'ok', false, ?, 32, 16, ?, ?, ?, ?, ?)",
                [rid, f"b{b}", wave + i * GATHER_MS / 1000, server + REQUEST_MS, ms, server, wave + 0.5, last],
            )
            con.executemany("INSERT INTO events VALUES ('r1', ?, ?, ?)", [(rid, i, ms) for i in range(1, 16)])
            rid += 1
    con.close()
    return path


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

    bent = {1: 23.0, 2: 48.0, 4: 93.0, 8: 109.0}  # measured on the packaged engine (README "A real engine")
    db = synthetic(tmp_path / "bent.duckdb", bent)
    f, _ = fit(duckdb.connect(str(db), read_only=True), "real", str(db))
    assert f.calibration is not None and f.calibration.decode_form.startswith("table")
    assert f.decode_step_ms == bent


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


def test_a_twin_of_the_real_engine_serves_its_figures(llamacpp, write, tmp_path):
    """Study the real engine (the mini study, about 15 s), calibrate, run the twin one request at a time: its TTFT
    and TPOT p50 are the engine's at batch 1 within 20% (a shared 2-core machine moves the engine's own by ~10%)."""
    db = tmp_path / "study.duckdb"
    w = write("phases.yaml", MINI_STUDY)
    res = loadgen("study", str(w), "--endpoints", llamacpp, "--db", str(db), "--set", "requests.output_tokens=32")
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(db), read_only=True)
    (name,) = con.execute("SELECT endpoint FROM runs").fetchone()
    measured_ttft, measured_tpot = con.execute(
        "SELECT ttft_p50_ms, tpot_p50_ms FROM summary WHERE stage = 'b1'"
    ).fetchone()
    con.close()
    twin = tmp_path / "twin.yaml"
    # A base URL's stored spec does not say the slots: the session engine has 8.
    res = loadgen("calibrate", str(db), "--endpoint", name, "--out", str(twin), "--slots", "8")
    assert res.returncode == 0, res.stderr
    run = write(
        "w.yaml",
        f"name: twin-b1\nendpoint: {twin}\napi: completions\nload: {{arrival: closed, concurrency: 1}}\n"
        "requests: {prompt_tokens: 32, output_tokens: 32}\nstop: {requests: 3}\n",
    )
    res = loadgen("run", str(run), "--db", str(tmp_path / "twin.duckdb"))
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(tmp_path / "twin.duckdb"), read_only=True)
    ttft, tpot, family = con.execute(
        "SELECT ttft_p50_ms, tpot_p50_ms, (SELECT spec->>'$.endpoint.server' FROM runs) FROM summary"
    ).fetchone()
    assert family == "llamacpp"
    assert ttft == pytest.approx(measured_ttft, rel=0.2) and tpot == pytest.approx(measured_tpot, rel=0.2)


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
    assert together[1] - together[0] == pytest.approx(0, abs=1.0) and together[0] == pytest.approx(84, abs=3)
    assert apart[1] - apart[0] == pytest.approx(40, abs=3)
    (lone,) = asyncio.run(first_tokens(3.0, 0, n=1))
    assert lone == pytest.approx(44, abs=3)
