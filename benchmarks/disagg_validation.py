"""Disaggregation predictions against end-to-end runs on the emulated disaggregated endpoint.

1. Measure the phases of the emulated H100 and GroqRack (a small study into one database).
2. Predict, with `loadgen disagg`'s model, the E2E of prefill on the H100 and decode on the GroqRack over
   25, 100 and 400 Gb/s for three length mixes, one request at a time.
3. Run each case on `endpoints/emulated-disagg-h100-groqrack.yaml` with that link speed and compare.
Bound: every predicted E2E within 10% of the measured median. Then the same at 4 concurrent requests, where the
GroqRack decode pool, which does not batch, becomes a queue: printed, with what it does to the gain.

    python benchmarks/disagg_validation.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb
import yaml
from common import Bounds, query, run_loadgen

from loadgen.analysis.disagg import Link, predict
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


PHASES = [stage(f"p{p}", "prefill", 1, 2, p, 1) for p in (128, 512, 2048)] + [
    stage("b1", "decode", 1, 2, 128, 128),
    stage("b4", "decode", 4, 4, 128, 128),
]


def write_workload(path: Path, name: str, endpoint: Path, stages: list[dict]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {"name": name, "endpoint": str(endpoint), "api": "completions", "stop": {"requests": 1}, "stages": stages}
        )
    )
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        db = t / "phases.duckdb"
        for ep in ("emulated-h100", "emulated-groqrack"):
            run_loadgen(
                write_workload(t / f"{ep}.yaml", ep, ROOT / "endpoints" / f"{ep}.yaml", PHASES), None, db, quiet=True
            )
        con = duckdb.connect(str(db), read_only=True)
        a, b = fit(con, "emulated-h100"), fit(con, "emulated-groqrack")
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

    bounds = Bounds("disaggregation: predicted against measured E2E, prefill H100 -> decode GroqRack")
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
    bounds.finish()


if __name__ == "__main__":
    main()
