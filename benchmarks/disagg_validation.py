"""Disaggregation predictions against end-to-end runs on the emulated disaggregated endpoint.

1. Measure the phases of the emulated H100 and GroqRack (a small study into one database).
2. Predict, with `loadgen disagg`'s model, the E2E of prefill on the H100 and decode on the GroqRack over
   25, 100 and 400 Gb/s for three length mixes, one request at a time.
3. Run each case on `endpoints/emulated-disagg-h100-groqrack.yaml` with that link speed and compare.
Bound: every predicted E2E within 10% of the measured median. Then the same at 4 concurrent requests, where the
GroqRack decode pool, which does not batch, becomes a queue: printed, with what it does to the gain.
4. Prefix reuse (`loadgen disagg --cached-share`): sessions of one turn over one shared 1792-token system
   prompt (87.5% of each 2048-token prompt), prefill on the H100 and decode on the GroqRack (only the prefill
   side caches: the whole KV cache crosses the link) or on an A100 (both cache: only the new 256 tokens
   cross). Same bound, against the median of the requests after the first (the cold one is warm-up).

    python benchmarks/disagg_validation.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import yaml
from common import Bounds, query, run_loadgen, write_workload

from loadgen.analysis.disagg import Link, Reuse, predict
from loadgen.analysis.phases import fit
from loadgen.hardware.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]
LINKS = (25.0, 100.0, 400.0)
MIXES = ((512, 64), (2048, 32), (128, 256))


def stage(name: str, phase: str, users: int, n: int, prompt: int, output: int) -> dict:
    return {
        "name": name,
        "phase": phase,
        "load": {"arrival": "closed", "concurrency": users},
        "requests": {"prompt_tokens": prompt, "output_tokens": output},
        "stop": {"requests": n},
    }


SYSTEM, MESSAGE, REUSE_OUTPUT = 1792, 256, 32  # a shared system prompt, a new message, the answer


def reuse_stage(name: str) -> dict:
    """One-turn sessions over one shared system prompt, one at a time; the first (cold) is warm-up."""
    return {
        "name": name,
        "phase": "decode",
        "load": {"arrival": "closed", "concurrency": 1},
        "sessions": {
            "turns": 1,
            "user_tokens": MESSAGE,
            "output_tokens": REUSE_OUTPUT,
            "system_prompts": {"count": 1, "tokens": SYSTEM},
        },
        "warmup": {"requests": 1},
        "stop": {"requests": 6},
    }


PHASES = [stage(f"p{p}", "prefill", 1, 2, p, 1) for p in (128, 512, 2048)] + [
    stage("b1", "decode", 1, 2, 128, 128),
    stage("b4", "decode", 4, 4, 128, 128),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        db = t / "phases.duckdb"
        for ep in ("emulated-h100", "emulated-groqrack", "emulated-a100"):
            run_loadgen(
                write_workload(t / f"{ep}.yaml", ep, ROOT / "endpoints" / f"{ep}.yaml", PHASES), None, db, quiet=True
            )
        con = duckdb.connect(str(db), read_only=True)
        a, b, c = fit(con, "emulated-h100"), fit(con, "emulated-groqrack"), fit(con, "emulated-a100")
        con.close()
        model = load_profile("llama-2-7b")
        base = yaml.safe_load((ROOT / "endpoints" / "emulated-disagg-h100-groqrack.yaml").read_text())
        link_cfg = base["emulate"]["link"]
        results = []
        for gbps in LINKS:
            ep = t / f"disagg-{gbps:g}.yaml"
            ep.write_text(yaml.safe_dump({**base, "emulate": {**base["emulate"], "link": {**link_cfg, "gbps": gbps}}}))
            stages = [stage(f"m{p}x{o}", "decode", 1, 3, p, o) for p, o in MIXES]
            stages += [stage(f"c4-m{p}x{o}", "decode", 4, 8, p, o) for p, o in MIXES[:1]]
            mdb = t / f"m{gbps:g}.duckdb"
            run_loadgen(write_workload(t / f"w{gbps:g}.yaml", "disagg", ep, stages), None, mdb, quiet=True)
            measured = dict(query(mdb, "SELECT stage, e2e_p50_ms FROM summary"))
            link = Link(gbps, link_cfg.get("latency_ms", 0.01), link_cfg.get("handoff_ms", 0.0))
            for p, o in MIXES:
                results.append((gbps, 1, p, o, predict(a, b, model, p, o, link, 1), measured[f"m{p}x{o}"]))
            p, o = MIXES[0]
            results.append((gbps, 4, p, o, predict(a, b, model, p, o, link, 4), measured[f"c4-m{p}x{o}"]))
        reused = []
        a100 = yaml.safe_load((ROOT / "endpoints" / "emulated-a100.yaml").read_text())["emulate"]
        for decode, fitted, caches in (("GroqRack", b, False), ("A100", c, True)):
            emulate = base["emulate"] if not caches else {**base["emulate"], "decode": a100}
            ep = t / f"reuse-{decode}.yaml"
            ep.write_text(yaml.safe_dump({**base, "name": f"disagg-h100-{decode}", "emulate": emulate}))
            rdb = t / f"reuse-{decode}.duckdb"
            run_loadgen(write_workload(t / f"r-{decode}.yaml", "reuse", ep, [reuse_stage("s")]), None, rdb, quiet=True)
            (got, cached), *_ = query(rdb, "SELECT e2e_p50_ms, cached_share FROM summary")
            link = Link(link_cfg["gbps"], link_cfg.get("latency_ms", 0.01), link_cfg.get("handoff_ms", 0.0))
            share = SYSTEM / (SYSTEM + MESSAGE)
            pred = predict(a, fitted, model, SYSTEM + MESSAGE, REUSE_OUTPUT, link, 1, Reuse(share, True, caches))
            reused.append((decode, share, cached, pred, got))

    bounds = Bounds("disaggregation: predicted against measured E2E, prefill on the H100")
    print(
        f"  {'Gb/s':>6} {'load':>4} {'prompt':>6} {'output':>6} {'predicted':>10} {'measured':>10} {'error':>7}"
        f"  {'H100 alone':>10} {'Groq alone':>10} {'gain':>7}"
    )
    for gbps, load, p, o, pred, got in results:
        err = pred.e2e_ab_ms / got - 1
        print(
            f"  {gbps:>6g} {load:>4} {p:>6} {o:>6} {pred.e2e_ab_ms:>10.1f} {got:>10.1f} {err:>+7.1%}"
            f"  {pred.e2e_a_ms:>10.1f} {pred.e2e_b_ms:>10.1f} {pred.gain:>+7.1%}"
        )
        if load == 1:
            bounds.check(
                f"{gbps:g} Gb/s, {p} in / {o} out: |predicted / measured - 1|", abs(err) * 100, "<=", 10.0, "%"
            )
    print("  At load 4 the GroqRack decodes one request at a time: each waits for the others, its effective TPOT is")
    print("  4 / (decode tokens/s), and the gain over the H100 alone shrinks or turns into a loss.")
    print(f"  Prefix reuse, 100 Gb/s, {SYSTEM + MESSAGE} in / {REUSE_OUTPUT} out, prefill on the H100:")
    print(f"  {'decode':>8} {'share':>6} {'server':>7} {'transfer':>9} {'predicted':>10} {'measured':>10} {'error':>7}")
    for decode, share, cached, pred, got in reused:
        err = pred.e2e_ab_ms / got - 1
        print(
            f"  {decode:>8} {share:>6.1%} {cached:>7.1%} {pred.transfer_ms:>7.2f}ms {pred.e2e_ab_ms:>10.1f}"
            f" {got:>10.1f} {err:>+7.1%}"
        )
        bounds.check(
            f"reuse {share:.1%}, decode on the {decode}: |predicted / measured - 1|", abs(err) * 100, "<=", 10.0, "%"
        )
        bounds.check(f"reuse, decode on the {decode}: server's cached share", cached * 100, ">=", share * 100 - 1, "%")
    bounds.finish()


if __name__ == "__main__":
    main()
