"""Disaggregation on real engines: `loadgen disagg`'s prediction against a real prefill/decode pair of llama.cpp
engines (endpoints/llamacpp-gemma-pd.yaml: the KV cache moves from A to B by slot save, file copy, slot restore).

1. Measure engine A alone and engine B alone with a small phase study (prefill at two prompt lengths, decode at
   batch 1, 2 and 4), each engine as the pair runs it (the packaged Gemma-3-270M, one thread, pinned to the core
   the pair gives it).
2. Measure the pair end to end, and A alone, at the same loads: closed loops of 1, 2 and 4 users, prompts of 128
   and 512 tokens, 32-token answers.
3. Predict with `loadgen disagg`'s model (loadgen.analysis.disagg.predict) from the two studies, the link's cost
   being the handoff the pair measured (requests.kv_handoff_ms, median per prompt length) plus the decode side's
   first step after a restore: B prefills again the prompt's last few tokens (Gemma 3's sliding-window attention
   makes llama.cpp go back to a checkpoint), which is B's TTFT for that many tokens.
4. Print predicted against measured TTFT, TPOT and E2E p50, and the gain against A alone, predicted and measured.
Bound: every predicted p50 within 15% of the measured one. It takes about 6 minutes on 2 cores, and needs them
otherwise idle: the engines' speed is what it measures.

    python benchmarks/disagg_real.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import yaml
from common import ROOT, Bounds, query, run_loadgen, write_workload

from loadgen.analysis.disagg import Link, predict
from loadgen.analysis.phases import fit
from loadgen.hardware.profiles import load_profile

PROMPTS = (128, 512)
LOADS = (1, 2, 4)
OUTPUT = 32
RESTART_TOKENS = 5  # what B prefills again after a restore (measured: cache_n = prompt - 5, every request)
ENGINE = {"kind": "llamacpp", "threads": 1, "slots": 4, "ctx": 8192}  # as each side of the pair
PINNED = {"engine-a": [0], "engine-b": [1]}  # the pair pins its prefill engine to the first core, decode to the next
BOUND = 15.0


def stage(name: str, users: int, n: int, prompt: int, output: int, phase: str | None = None) -> dict:
    """`n` requests, the first a warm-up. Whole rounds of `users`: a last round with fewer users would decode at a
    smaller batch, and the decode throughput of the stage, from which the model's TPOT at load also comes, with
    it (a first version, with one request more, predicted 55 ms at 2 users for 44 measured)."""
    s = {
        "name": name,
        "load": {"arrival": "closed", "concurrency": users},
        "requests": {"prompt_tokens": prompt, "output_tokens": output},
        "warmup": {"requests": 1},
        "stop": {"requests": n},
    }
    return {**s, "phase": phase} if phase else s


STUDY = [stage(f"p{p}", 1, 4, p, 1, "prefill") for p in (16, *PROMPTS)] + [
    stage(f"b{n}", n, 3 * n, 32, OUTPUT, "decode") for n in LOADS
]
LOADED = [stage(f"{p}x{n}", n, 3 * n, p, OUTPUT) for p in PROMPTS for n in LOADS]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        study = t / "study.duckdb"
        for side in ("engine-a", "engine-b"):
            ep = t / f"{side}.yaml"
            ep.write_text(yaml.safe_dump({"name": side, "launch": {**ENGINE, "cores": PINNED[side]}}))
            run_loadgen(write_workload(t / f"{side}-study.yaml", side, ep, STUDY), None, study, quiet=True)
        con = duckdb.connect(str(study), read_only=True)
        a, b = fit(con, "engine-a"), fit(con, "engine-b")
        con.close()
        pair, alone = t / "pair.duckdb", t / "alone.duckdb"
        pair_ep = ROOT / "endpoints" / "llamacpp-gemma-pd.yaml"
        run_loadgen(write_workload(t / "pair.yaml", "pair", pair_ep, LOADED), None, pair, quiet=True)
        run_loadgen(write_workload(t / "alone.yaml", "alone", t / "engine-a.yaml", LOADED), None, alone, quiet=True)
        figures = "SELECT stage, ttft_p50_ms, tpot_p50_ms, e2e_p50_ms FROM summary"
        measured = {s: f for s, *f in query(pair, figures)}
        measured_alone = {s: f for s, *f in query(alone, figures)}
        handoff = dict(
            query(
                pair,
                "SELECT prompt_tokens, median(kv_handoff_ms) FROM requests WHERE status = 'ok' AND NOT warmup "
                "GROUP BY 1",
            )
        )
        kv_bytes = dict(query(pair, "SELECT prompt_tokens, median(kv_bytes) FROM requests GROUP BY 1"))

    model = load_profile("llama-2-7b")  # its KV size does not enter: the link below is the measured handoff
    restart = b.ttft(RESTART_TOKENS)
    bounds = Bounds(f"disaggregation on two real llama.cpp engines: predicted against measured p50, {OUTPUT} out")
    print(f"  decode side's first step after a restore ({RESTART_TOKENS} tokens again): {restart:.1f} ms")
    for p in PROMPTS:
        print(f"  {p}-token prompts: KV cache {kv_bytes[p] / 1e6:.2f} MB, handoff p50 {handoff[p]:.1f} ms")
    print(
        f"  {'prompt':>6} {'load':>4} | {'TTFT pred':>9} {'meas':>7} {'err':>6} | {'TPOT pred':>9} {'meas':>7}"
        f" {'err':>6} | {'E2E pred':>9} {'meas':>7} {'err':>6} | {'gain pred':>9} {'meas':>7}"
    )
    for p in PROMPTS:
        for n in LOADS:
            link = Link(gbps=1e9, latency_ms=0.0, handoff_ms=handoff[p] + restart)
            pred = predict(a, b, model, p, OUTPUT, link, n)
            ttft, tpot, e2e = measured[f"{p}x{n}"]
            e2e_alone = measured_alone[f"{p}x{n}"][2]
            errs = [pred.ttft_ab_ms / ttft - 1, pred.tpot_ab_ms / tpot - 1, pred.e2e_ab_ms / e2e - 1]
            gain_pred, gain_meas = pred.e2e_a_ms / pred.e2e_ab_ms - 1, e2e_alone / e2e - 1
            print(
                f"  {p:>6} {n:>4} | {pred.ttft_ab_ms:>9.1f} {ttft:>7.1f} {errs[0]:>+6.1%} | {pred.tpot_ab_ms:>9.1f}"
                f" {tpot:>7.1f} {errs[1]:>+6.1%} | {pred.e2e_ab_ms:>9.1f} {e2e:>7.1f} {errs[2]:>+6.1%} |"
                f" {gain_pred:>+9.1%} {gain_meas:>+7.1%}"
            )
            for what, err in zip(("TTFT", "TPOT", "E2E"), errs, strict=True):
                bounds.check(f"{p} in, load {n}: {what} |predicted / measured - 1|", abs(err) * 100, "<=", BOUND, "%")
    print("  gain: E2E on A alone over E2E on the pair, minus 1 (predicted from A's study; measured on A alone)")
    bounds.finish()


if __name__ == "__main__":
    main()
