"""Predict, then verify: a twin calibrated from the real llama.cpp engine's study, against the engine itself on
workloads the fit never saw (issue 23).

1. `loadgen study workloads/phase-study-cpu.yaml` on the packaged engine (endpoints/llamacpp-gemma.yaml), then
   `loadgen calibrate` from that database: the twin.
2. Held out, on the engine and on its twin: closed-loop chat (32-160-token prompts, 32-token answers) at 1, 2
   and 3 users; and `loadgen search workloads/capacity-cpu.yaml --over concurrency` (95% of requests within
   TTFT 1.5 s and TPOT 100 ms).
3. Printed: measured against predicted TTFT, TPOT and E2E at p50 and p90 per held-out stage, and the capacity,
   each with its error; and the held-out chat run on the engine a second time, with how far the engine moved
   from its own first run (no bound: the floor under any twin's error on this machine). Bounds (the issue's):
   p50 within 15%, p90 within 25%, capacity within 20%.

The engine's figures need the machine otherwise idle (README "A real engine: llama.cpp"); even so, on a shared
virtual machine a p90 of a few requests moves by 10-40% from one run to the next (the engine slows for seconds
at a time), which the "engine again" column shows. It takes about 7 minutes.

    python benchmarks/calibration.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import Bounds, query

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "endpoints" / "llamacpp-gemma.yaml"
STUDY = ROOT / "workloads" / "phase-study-cpu.yaml"
CAPACITY = ROOT / "workloads" / "capacity-cpu.yaml"
# The held-out chat: capacity-cpu's requests, closed loops of 1, 2 and 3 users (3 is the engine's capacity).
HELD_OUT = {
    "name": "held-out-chat",
    "endpoint": str(ENGINE),
    "api": "chat",
    "seed": 3,
    "requests": {"prompt_tokens": {"dist": "uniform", "min": 32, "max": 160}, "output_tokens": 32},
    "warmup": {"requests": 2},  # the engine's first requests after it starts run slower
    "stages": [
        {"name": f"users-{n}", "load": {"arrival": "closed", "concurrency": n}, "stop": {"requests": r}}
        for n, r in ((1, 6), (2, 12), (3, 18))
    ],
}
METRICS = [(m, q) for m in ("ttft", "tpot", "e2e") for q in ("p50", "p90")]
BOUND = {"p50": 15.0, "p90": 25.0}
CAPACITY_BOUND = 20.0


def loadgen(*args: str) -> str:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "loadgen", *args], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"loadgen {args[0]} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    print(f"  loadgen {' '.join(Path(a).name if '/' in a else a for a in args)}: {time.perf_counter() - t:.0f} s")
    return res.stdout


def figures(db: Path) -> dict[str, dict[str, float]]:
    cols = ", ".join(f"{m}_{q}_ms" for m, q in METRICS)
    rows = query(db, f"SELECT stage, {cols} FROM summary ORDER BY stage")
    return {r[0]: {f"{m} {q}": v for (m, q), v in zip(METRICS, r[1:], strict=True)} for r in rows}


def capacity(db: Path) -> float | None:
    rows = query(db, "SELECT highest_passing FROM capacity")
    return rows[0][0] if rows else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="keep the databases and the twin here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = args.keep or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        study, twin = d / "study.duckdb", d / "twin.yaml"
        for f in (study, d / "real.duckdb", d / "twin.duckdb", d / "search-real.duckdb", d / "search-twin.duckdb"):
            f.unlink(missing_ok=True)
        print(f"  load average before: {os.getloadavg()[0]:.2f} (the engine's figures need an idle machine)")
        loadgen("study", str(STUDY), "--endpoints", str(ENGINE), "--db", str(study))
        (endpoint,) = query(study, "SELECT DISTINCT endpoint FROM runs")[0]
        print(loadgen("calibrate", str(study), "--endpoint", endpoint, "--out", str(twin)))
        held = d / "held-out.yaml"
        held.write_text(yaml.safe_dump(HELD_OUT, sort_keys=False))
        got = {}
        # The engine twice: how far it moves from itself (the floor under any twin's error on this machine).
        for who, ep in (("real", ENGINE), ("twin", twin), ("again", ENGINE)):
            db = d / f"{who}.duckdb"
            loadgen("run", str(held), "--endpoint", str(ep), "--db", str(db), "--server-metrics", "0")
            got[who] = figures(db)
        measured, predicted, again = got["real"], got["twin"], got["again"]
        caps = {}
        for who, ep in (("real", ENGINE), ("twin", twin)):
            db = d / f"search-{who}.duckdb"
            loadgen("search", str(CAPACITY), "--over", "concurrency", "--endpoint", str(ep), "--db", str(db))
            caps[who] = capacity(db)
        took = time.perf_counter() - t0

    b = Bounds("a twin of the real llama.cpp engine against the engine, on workloads the fit never saw")
    head = ("stage", "metric", "engine ms", "twin ms", "error", "engine again", "moved")
    print("  {:<10} {:<9} {:>10} {:>10} {:>8} {:>13} {:>7}".format(*head))
    for stage, m in measured.items():
        for name, v in m.items():
            p, a = predicted.get(stage, {}).get(name), again.get(stage, {}).get(name)
            err = "-" if not v or p is None else f"{p / v - 1:+.1%}"
            moved = "-" if not v or a is None else f"{a / v - 1:+.1%}"
            print(f"  {stage:<10} {name:<9} {v or 0:>10,.1f} {p or 0:>10,.1f} {err:>8} {a or 0:>13,.1f} {moved:>7}")
    print(f"  capacity (users, capacity-cpu's SLO): engine {caps['real']}, twin {caps['twin']}")
    print(f"  took {took:.0f} s")
    for stage, m in measured.items():
        for name, v in m.items():
            p = predicted.get(stage, {}).get(name)
            if v and p is not None:
                b.check(f"{stage} {name} |error|", abs(p / v - 1) * 100, "<=", BOUND[name.split()[1]], "%")
    if caps["real"] is None or caps["twin"] is None:
        print("  MISS a capacity was not found")
        b.missed.append("capacity")
    else:
        b.check("capacity |error|", abs(caps["twin"] / caps["real"] - 1) * 100, "<=", CAPACITY_BOUND, "%")
    b.finish()


if __name__ == "__main__":
    main()
