"""Disaggregation on real engines: `loadgen disagg`'s prediction against a real prefill/decode pair of llama.cpp
engines (endpoints/llamacpp-gemma-pd.yaml: the KV cache moves from A to B by slot save, file copy, slot restore).

1. Measure engine A alone and engine B alone with a small phase study (prefill at two prompt lengths, decode at
   batch 1, 2 and 4), each engine as the pair runs it (the packaged Gemma-3-270M, one thread, pinned to the core
   the pair gives it).
2. Measure the pair end to end, and A alone, at the same loads: closed loops of 1, 2 and 4 users, prompts of 128
   and 512 tokens, 32-token answers.
3. Predict with `loadgen disagg --prefill engine-a --decode engine-b` from the two studies (its JSON), the
   link's cost being the handoff the pair measured (requests.kv_handoff_ms, median per prompt length) plus the
   decode side's first step after a restore: B prefills again the prompt's last few tokens (Gemma 3's
   sliding-window attention makes llama.cpp go back to a checkpoint), which is B's TTFT for that many tokens.
4. Print predicted against measured TTFT, TPOT and E2E p50, and the gain against A alone, predicted and measured.
Bound: every predicted p50 within 15% of the measured one. It takes about 6 minutes on 2 cores, and needs them
otherwise idle: the engines' speed is what it measures.

    python benchmarks/disagg_real.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import orjson
import yaml
from common import ROOT, Bounds, loadgen, query, run_loadgen, write_workload

from loadgen.analysis.phases import fit

PROMPTS = (128, 512)
LOADS = (1, 2, 4)
OUTPUT = 32
RESTART_TOKENS = 5  # what B prefills again after a restore (measured: cache_n = prompt - 5, every request)
ENGINE = {"kind": "llamacpp", "threads": 1, "slots": 4, "ctx": 8192}  # as each side of the pair
PINNED = {"engine-a": [0], "engine-b": [1]}  # the pair pins its prefill engine to the first core, decode to the next
BOUND = 15.0


def stage(name: str, users: int, n: int, prompt: int, output: int, phase: str | None = None) -> dict:
    """`n` requests, the first round of `users` a warm-up. Whole rounds: a round with fewer users would decode at a
    smaller batch, and the decode throughput of the stage, from which the model's TPOT at load also comes, with
    it (a first version, with one request more, predicted 55 ms at 2 users for 44 measured). And a whole round of
    warm-up: the users move in lockstep, so one warm-up request decodes beside counted ones, whose tokens alone
    were then counted over the time they shared with it (36.8 decode tokens/s at 2 users for 42 at TPOT p50 47.5
    ms; the model's TPOT at 2 users came 55 ms for 46-48 measured on the pair)."""
    s = {
        "name": name,
        "load": {"arrival": "closed", "concurrency": users},
        "requests": {"prompt_tokens": prompt, "output_tokens": output},
        "warmup": {"requests": users},
        "stop": {"requests": n},
    }
    return {**s, "phase": phase} if phase else s


STUDY = [stage(f"p{p}", 1, 4, p, 1, "prefill") for p in (16, *PROMPTS)] + [
    stage(f"b{n}", n, 3 * n, 32, OUTPUT, "decode") for n in LOADS
]
LOADED = [stage(f"{p}x{n}", n, 3 * n, p, OUTPUT) for p in PROMPTS for n in LOADS]


def disagg(study: Path, workload: Path, handoff_ms: float) -> dict[int, dict]:
    """`loadgen disagg` as a user runs it: A's prefill, B's decode, the link's cost the handoff (an unbounded
    link: the measured handoff is the whole transfer), at each load; its JSON rows by load."""
    out = loadgen(
        "disagg", str(study), "--prefill", "engine-a", "--decode", "engine-b", "--link", "1e9", "--latency-ms", "0",
        "--handoff-ms", f"{handoff_ms:.3f}", "--load", ",".join(map(str, LOADS)), "--workload", str(workload),
        "--model", "llama-2-7b", "--format", "json",
    )  # fmt: skip
    return {row["load"]: row for row in orjson.loads(out)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        study = t / "study.duckdb"
        for side in ("engine-a", "engine-b"):
            ep = t / f"{side}.yaml"
            ep.write_text(yaml.safe_dump({"name": side, "launch": {**ENGINE, "cores": PINNED[side]}}))
            run_loadgen(write_workload(t / f"{side}-study.yaml", side, ep, STUDY), None, study, quiet=True)
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
        # The decode side's first step after a restore: B's TTFT for the tokens it prefills again, from its study.
        con = duckdb.connect(str(study), read_only=True)
        restart = fit(con, "engine-b").ttft(RESTART_TOKENS)
        con.close()
        # The model's KV size does not enter: the link is the measured handoff.
        predicted = {}
        for p in PROMPTS:
            mix = write_workload(t / f"mix-{p}.yaml", "mix", t / "engine-a.yaml", [stage("m", 1, 1, p, OUTPUT)])
            predicted[p] = disagg(study, mix, handoff[p] + restart)

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
            row = predicted[p][n]
            ttft_ab, e2e_ab, e2e_a = row["TTFT A→B ms"], row["E2E A→B ms"], row["E2E engine-a ms"]
            tpot_ab = (e2e_ab - ttft_ab) / (OUTPUT - 1)
            ttft, tpot, e2e = measured[f"{p}x{n}"]
            e2e_alone = measured_alone[f"{p}x{n}"][2]
            errs = [ttft_ab / ttft - 1, tpot_ab / tpot - 1, e2e_ab / e2e - 1]
            gain_pred, gain_meas = e2e_a / e2e_ab - 1, e2e_alone / e2e - 1
            print(
                f"  {p:>6} {n:>4} | {ttft_ab:>9.1f} {ttft:>7.1f} {errs[0]:>+6.1%} | {tpot_ab:>9.1f}"
                f" {tpot:>7.1f} {errs[1]:>+6.1%} | {e2e_ab:>9.1f} {e2e:>7.1f} {errs[2]:>+6.1%} |"
                f" {gain_pred:>+9.1%} {gain_meas:>+7.1%}"
            )
            for what, err in zip(("TTFT", "TPOT", "E2E"), errs, strict=True):
                bounds.check(f"{p} in, load {n}: {what} |predicted / measured - 1|", abs(err) * 100, "<=", BOUND, "%")
    print("  gain: E2E on A alone over E2E on the pair, minus 1 (predicted from A's study; measured on A alone)")
    bounds.finish()


if __name__ == "__main__":
    main()
