"""`loadgen search` against a dense sweep, and the server's scraped running requests against a closed loop.

1. On the emulated H100, workloads/chat-capacity.yaml (Poisson chat, SLO: TTFT <= 250 ms and TPOT <= 25 ms for
   95% of requests), both from 6 req/s with 160 requests a stage (the first 40 out of the judgement; at most
   30 s): `loadgen search`, and a sweep of every rate from 6 req/s up in steps of 5% to 30 req/s (stages
   judged by the same rule as the search's trials: the SLO share, no saturation, no held-back sends; the sweep's
   capacity is its highest rate below the first that fails). Bounds: the search's capacity within 10% of the
   sweep's, using at most a third of the sweep's requests. Both capacities, request counts and times are printed.
2. A closed loop of 16 users on the emulated H100: bound: the mean of the emulator's scraped
   `vllm:num_requests_running` (the canonical `running` series) while all 16 are busy within 1 of 16.

    python benchmarks/capacity_search.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import Bounds, overrides, query, run_loadgen

from loadgen.store.schema import HELD_BACK_MS

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = ROOT / "workloads" / "chat-capacity.yaml"
START, STEP, STAGES, TARGET = 6.0, 1.05, 34, 0.95
# What each trial and sweep stage is, whatever the shipped workload says.
PINNED = {"load.rate": START, "stop.requests": 160, "warmup.requests": 40, "stop.duration_s": 30}


def search(db: Path) -> tuple[float | None, int, float]:
    t0 = time.perf_counter()
    args = [sys.executable, "-m", "loadgen", "search", str(WORKLOAD), "--db", str(db)]
    args += ["--goodput", str(TARGET), *overrides(PINNED)]
    res = subprocess.run(args, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"loadgen search failed ({res.returncode}):\n{res.stderr[-2000:]}")
    print(res.stdout)
    ((capacity, requests),) = query(
        db, "SELECT c.highest_passing, (SELECT sum(requests) FROM trial_stages) FROM capacity c"
    )
    return capacity, int(requests), time.perf_counter() - t0


def sweep(tmp: Path) -> tuple[float | None, int, float]:
    spec = yaml.safe_load(WORKLOAD.read_text())
    spec["endpoint"] = str((WORKLOAD.parent / spec["endpoint"]).resolve())
    spec["stop"].update(requests=PINNED["stop.requests"], duration_s=PINNED["stop.duration_s"])
    spec["warmup"] = {"requests": PINNED["warmup.requests"]}
    rates = [round(START * STEP**k, 3) for k in range(STAGES)]
    spec["stages"] = [{"name": f"r{r:g}", "load": {**spec["load"], "rate": r}} for r in rates]
    w = tmp / "sweep.yaml"
    w.write_text(yaml.safe_dump(spec))
    db = tmp / "sweep.duckdb"
    t0 = time.perf_counter()
    run_loadgen(w, None, db, quiet=True)
    took = time.perf_counter() - t0
    rows = query(
        db,
        "SELECT st.rate, s.slo_share, s.lag_p50_ms, st.ended IS NOT NULL, s.requests FROM stages st "
        "JOIN summary s USING (run_id, stage) ORDER BY st.idx",
    )
    passed = [(rate, share >= TARGET and lag <= HELD_BACK_MS and not ended) for rate, share, lag, ended, _ in rows]
    first_fail = next((rate for rate, ok in passed if not ok), None)
    below = [rate for rate, ok in passed if ok and (first_fail is None or rate < first_fail)]
    print("  sweep: " + " ".join(f"{rate:g}{'' if ok else 'x'}" for rate, ok in passed))
    return (max(below) if below else None), sum(r[4] for r in rows), took


def running_mean(tmp: Path) -> float:
    w = tmp / "closed.yaml"
    spec = yaml.safe_load(WORKLOAD.read_text())
    spec["endpoint"] = str((WORKLOAD.parent / spec["endpoint"]).resolve())
    spec["load"] = {"arrival": "closed", "concurrency": 16}
    spec["stop"] = {"requests": 320}
    w.write_text(yaml.safe_dump(spec))
    db = tmp / "closed.duckdb"
    run_loadgen(w, None, db, quiet=True)
    # While all 16 users are busy: from the 16th send to the last send (after it, users run out of work).
    ((mean, scrapes),) = query(
        db,
        "WITH busy AS (SELECT (SELECT sent_s FROM requests ORDER BY sent_s LIMIT 1 OFFSET 15) AS a, "
        "max(sent_s) AS b FROM requests) "
        "SELECT avg(value), count(*) FROM server_series, busy WHERE series = 'running' AND t_s BETWEEN a AND b",
    )
    print(f"  closed loop of 16 users: {scrapes} scrapes while all were busy, mean running {mean:.2f}")
    return mean


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        found, search_requests, search_s = search(t / "search.duckdb")
        dense, sweep_requests, sweep_s = sweep(t)
        mean = running_mean(t)
    b = Bounds("capacity search against a dense sweep (emulated H100, chat, TTFT <= 250 ms, TPOT <= 25 ms, 95%)")
    print(f"  search: capacity {found} req/s, {search_requests} requests, {search_s:.0f} s")
    print(
        f"  sweep (5% steps from {START:g} req/s): capacity {dense} req/s, {sweep_requests} requests, {sweep_s:.0f} s"
    )
    if found is None or dense is None:
        raise SystemExit("a capacity was not found")
    b.check("|search / sweep capacity - 1|", abs(found / dense - 1) * 100, "<=", 10.0, "%")
    b.check("search requests / sweep requests", search_requests / sweep_requests, "<=", 1 / 3)
    b.check("|mean scraped running - 16| (closed loop of 16)", abs(mean - 16), "<=", 1.0)
    b.finish()


if __name__ == "__main__":
    main()
