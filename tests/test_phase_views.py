"""The phase views and the study's findings, pinned against hand computations on a small synthetic database."""

from __future__ import annotations

import duckdb
import orjson
import pytest

from loadgen.analysis.findings import findings
from loadgen.store import schema


def _db() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for ddl in schema.ALL:
        con.execute(ddl)
    return con


def _run(con, run_id: str, endpoint: str, engine: str) -> None:
    spec = {"endpoint": {"name": endpoint, "emulate": {"engine": engine, "model": "llama-2-7b"}}}
    con.execute(
        "INSERT INTO runs (run_id, workload, endpoint, started_at, status, spec) "
        "VALUES (?, 'w', ?, now(), 'completed', ?)",
        [run_id, endpoint, orjson.dumps(spec).decode()],
    )


def _stage(con, run_id: str, stage: str, phase: str, batch: int) -> None:
    con.execute(
        "INSERT INTO stages (run_id, stage, idx, phase, arrival, concurrency, rate, spec) "
        "VALUES (?, ?, 0, ?, 'closed', ?, NULL, '{}')",
        [run_id, stage, phase, batch],
    )


def _req(con, run_id, stage, rid, sent, first, last, prompt, out, status="ok", warmup=False) -> None:
    end = None if last is None else last + 0.1
    ttft = None if first is None else (first - sent) * 1000
    tpot = (last - first) * 1000 / (out - 1) if first is not None and out >= 2 else None
    con.execute(
        "INSERT INTO requests (run_id, request_id, stage, warmup, scheduled_s, sent_s, first_token_s, last_token_s, "
        "end_s, prompt_tokens, max_tokens, output_tokens, ttft_ms, tpot_ms, e2e_ms, status) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, rid, stage, warmup, sent, sent, first, last, end, prompt, out, out, ttft, tpot,
         None if end is None else (end - sent) * 1000, status],
    )  # fmt: skip


@pytest.fixture
def con():
    con = _db()
    _run(con, "r1", "gpu", "gpu")
    _stage(con, "r1", "d2", "decode", 2)
    # Decode windows [1, 3] and [2, 4] overlap (3 s together); [6, 7] stands apart: 4 s of decoding in all.
    # A window inside another ([2.5, 2.8]) adds tokens but no time.
    _req(con, "r1", "d2", 0, 0.0, 1.0, 3.0, 10, 5)  # 4 tokens after the first
    _req(con, "r1", "d2", 1, 0.5, 2.0, 4.0, 10, 3)  # 2
    _req(con, "r1", "d2", 2, 5.0, 6.0, 7.0, 10, 5)  # 4
    _req(con, "r1", "d2", 3, 2.4, 2.5, 2.8, 10, 2)  # 1
    _req(con, "r1", "d2", 4, 0.2, 9.0, 9.0, 10, 1)  # one token: no decode window
    _req(con, "r1", "d2", 5, 0.1, None, None, 10, 0, status="error")  # counts in no phase
    _req(con, "r1", "d2", 6, 8.0, 8.5, 20.0, 10, 50, warmup=True)  # warm-up stays out
    _stage(con, "r1", "p4", "prefill", 4)
    # Prefill windows [10, 10.5] and [10.1, 10.8] make 0.8 s for 200 prompt tokens; [11, 11.2] adds 0.2 s, 100.
    _req(con, "r1", "p4", 10, 10.0, 10.5, 10.5, 100, 1)
    _req(con, "r1", "p4", 11, 10.1, 10.8, 10.8, 100, 1)
    _req(con, "r1", "p4", 12, 11.0, 11.2, 11.2, 100, 1)
    return con


def test_decode_throughput_counts_tokens_after_the_first_over_the_union_of_decode_windows(con):
    row = con.execute(
        "SELECT requests, decode_tokens_per_s, stage_tokens_per_s, tpot_p50_ms FROM decode WHERE endpoint = 'gpu'"
    ).fetchone()
    requests, decode_tps, stage_tps, _ = row
    assert requests == 5  # ok and not warm-up
    assert decode_tps == pytest.approx((4 + 2 + 4 + 1) / 4.0)
    # The stage's output tokens over its span (first send 0.0 to last end 9.1), as `summary` has it.
    assert stage_tps == pytest.approx((5 + 3 + 5 + 2 + 1) / 9.1)
    (summary_tps,) = con.execute("SELECT output_tokens_per_s FROM summary WHERE stage = 'd2'").fetchone()
    assert stage_tps == pytest.approx(summary_tps)


def test_the_time_the_server_says_it_prefilled_another_prompt_is_no_decode_time(con):
    """llama.cpp's prompt_ms: request 3's prefill (0.3 s, ending at its first token, 2.5 s) and request 1's (1 s,
    ending at 2.0, from 1.0 where decoding began) leave the decode windows' union 1.3 s shorter; a prefill no
    decode window covers (request 4's, ending at 9.0) takes nothing out."""
    for rid, prefill_ms in [(3, 300.0), (1, 1000.0), (4, 500.0)]:
        con.execute("UPDATE requests SET server_prefill_ms = ? WHERE request_id = ?", [prefill_ms, rid])
    (decode_tps,) = con.execute("SELECT decode_tokens_per_s FROM decode WHERE endpoint = 'gpu'").fetchone()
    assert decode_tps == pytest.approx((4 + 2 + 4 + 1) / (4.0 - 0.3 - 1.0))


def test_prefill_throughput_is_prompt_tokens_over_the_union_of_prefill_windows(con):
    row = con.execute("SELECT batch, requests, prefill_tokens_per_s, ttft_p50_ms FROM prefill").fetchone()
    assert row[:2] == (4, 3)
    assert row[2] == pytest.approx(300 / 1.0)
    assert row[3] == pytest.approx(500.0)


def test_a_groqrack_that_serves_one_at_a_time_decodes_at_one_over_tpot_at_any_batch():
    con = _db()
    _run(con, "g", "groq", "groq")
    _stage(con, "g", "b4", "decode", 4)
    # Four requests in a queue: each prefills for 1 s, then decodes 10 tokens at 0.1 s a token.
    for i in range(4):
        start = i * 2.0
        _req(con, "g", "b4", i, 0.0, start + 1.0, start + 1.9, 10, 10)
    tps, stage_tps, tpot = con.execute(
        "SELECT decode_tokens_per_s, stage_tokens_per_s, tpot_p50_ms FROM decode"
    ).fetchone()
    assert tpot == pytest.approx(100.0)
    assert tps == pytest.approx(1000.0 / tpot)  # not batch / TPOT: the requests never decode together
    assert stage_tps == pytest.approx(40 / 8.0)  # prefills included, the stage's figure halves


def _phase_db(groq_tpot_ms: float, groq_prefill_s_per_token: float):
    """A GPU and a GroqRack measured at two prompt lengths and batches 1, 4 and 16."""
    con = _db()
    for ep, engine in (("gpu", "gpu"), ("lpu", "groq")):
        _run(con, ep, ep, engine)
        for prompt in (100, 1000):
            stage = f"p{prompt}"
            _stage(con, ep, stage, "prefill", 1)
            ttft = prompt * (0.0001 if engine == "gpu" else groq_prefill_s_per_token)
            _req(con, ep, stage, prompt, 0.0, ttft, ttft, prompt, 1)
        rid = 10_000
        for batch in (1, 4, 16):
            stage = f"b{batch}"
            _stage(con, ep, stage, "decode", batch)
            for i in range(batch):
                rid += 1
                if engine == "gpu":  # all decode together; TPOT grows a little with the batch
                    tpot = 0.010 * (1 + batch / 32)
                    _req(con, ep, stage, rid, 0.0, 0.01, 0.01 + 10 * tpot, 10, 11)
                else:  # one at a time
                    tpot = groq_tpot_ms / 1000
                    start = i * 10 * tpot
                    _req(con, ep, stage, rid, 0.0, start, start + 10 * tpot, 10, 11)
    return con


def test_crossover_and_findings_on_phase_pure_figures():
    con = _phase_db(groq_tpot_ms=4.0, groq_prefill_s_per_token=0.004)
    cross = {
        (e, v): (d, u, t)
        for e, v, d, u, t in con.execute(
            "SELECT endpoint, versus, decode_passes_at_batch, per_user_below_at_batch, ttft_lower_from_prompt_tokens "
            "FROM crossover"
        ).fetchall()
    }
    # GPU: 1 / 10.3 ms = 97 tok/s at batch 1 against the LPU's 250; at batch 4, 4 / 11.25 ms = 356 passes it.
    assert cross[("gpu", "lpu")] == (4, 1, 100)
    assert cross[("lpu", "gpu")] == (1, None, None)
    f1, f2, f3, f4 = findings(con)
    assert f1.holds and "gpu at 100-1000" in f1.short
    assert f2.holds and f2.short.startswith("lpu 4.0 ms")
    assert f3.holds and "passed by gpu at 4" in f3.short
    assert f4.holds is True and "prefill on gpu, decode on lpu" in f4.measured


def test_findings_say_when_the_measurement_differs_from_the_study():
    # A GroqRack with fast prefill and slow decode: it wins Prefill, the GPU wins Decode.
    con = _phase_db(groq_tpot_ms=20.0, groq_prefill_s_per_token=0.00001)
    f1, f2, f3, _ = findings(con)
    assert f1.holds is False and "lpu at 100-1000" in f1.short
    assert f2.holds is False and f2.short.startswith("gpu")
    assert f3.holds is False
    # Only GPUs measured: the GroqRack findings cannot be judged, and say so.
    f2 = findings(con, endpoints=["gpu"])[1]
    assert f2.holds is None


def test_extrapolation_never_runs_downhill_into_nothing():
    """Two noisy prefill points where the longer prompt came back faster (a pipelined GroqRack's 4-6 ms TTFTs, on a
    busy machine) keep their last value beyond the range, not a line down to 0 ms (a study once failed dividing by
    it); a split over them is judged."""
    import numpy as np

    from loadgen.analysis.disagg import Link, predict
    from loadgen.analysis.phases import PhaseModel
    from loadgen.hardware.profiles import load_profile

    noisy = PhaseModel("g", np.array([128.0, 512.0]), np.array([6.4, 4.2]), np.array([1.0, 8.0]),
                       np.array([2.0, 16.0]), np.array([500.0, 500.0]))  # fmt: skip
    assert noisy.ttft(2048) == 4.2 and noisy.ttft(64) > 0
    pred = predict(noisy, noisy, load_profile("llama-2-7b"), 2048, 1, Link(100.0))
    assert pred.e2e_a_ms == 4.2 and pred.gain < 0  # the KV transfer alone is 20 times the prefill: a loss
