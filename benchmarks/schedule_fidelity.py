"""Open-loop fidelity: Poisson arrivals at 200 requests/s for 30 s against the emulator.

Bounds: p99 lag_ms (actual send - scheduled send) <= 5 ms; achieved send rate within 1% of the planned one
(the schedule drawn from the seed; a 30 s Poisson sample itself differs from the requested rate by about
1/sqrt(6000) = 1.3%, which is printed too); coefficient of variation of the actual gaps between sends within
0.05 of 1 (a Poisson process).

The emulated H100 schedules with chunked prefill (vLLM's default since its V1 engine), so prefills ride along
with decode steps. With prefill-first steps instead, every arrival pauses all decodes, about 70 requests are in
flight and each step's tokens reach loadgen as one burst: the p99 lag was then 6-8 ms here (see docs/benchmarks.md).

    python benchmarks/schedule_fidelity.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from common import Bounds, query, run_loadgen

RATE, DURATION = 200.0, 30.0
ENDPOINT = """
name: emulated-h100-chunked
model: llama-2-7b
emulate:
  engine: gpu
  hardware: h100-sxm
  serving: {chunked_prefill: true, max_num_batched_tokens: 2048}
"""
WORKLOAD = f"""
name: schedule-fidelity
endpoint: ep.yaml
api: completions
seed: 3
load: {{arrival: poisson, rate: {RATE}, concurrency: 256}}
requests: {{prompt_tokens: 64, output_tokens: 8}}
stop: {{duration_s: {DURATION}}}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w, db = Path(tmp) / "w.yaml", Path(tmp) / "r.duckdb"
        (Path(tmp) / "ep.yaml").write_text(ENDPOINT)
        w.write_text(WORKLOAD)
        run_loadgen(w, None, db, quiet=True)
        rows = query(db, "SELECT scheduled_s, sent_s, lag_ms, status FROM requests ORDER BY scheduled_s")
    sched = np.array([r[0] for r in rows])
    sent = np.sort(np.array([r[1] for r in rows]))
    lag = np.array([r[2] for r in rows])
    planned_rate = (len(sched) - 1) / (sched[-1] - sched[0])
    achieved = (len(sent) - 1) / (sent[-1] - sent[0])
    gaps = np.diff(sent)
    cv = gaps.std() / gaps.mean()
    b = Bounds(f"schedule fidelity: Poisson {RATE:.0f} req/s for {DURATION:.0f} s, {len(rows)} requests")
    b.check("p99 lag_ms", float(np.percentile(lag, 99)), "<=", 5.0, "ms")
    print(f"  (lag p50 {np.percentile(lag, 50):.3f} ms, max {lag.max():.3f} ms; planned rate {planned_rate:.2f}/s)")
    print(f"  (achieved {achieved:.2f} req/s against {RATE:.0f} requested: {achieved / RATE - 1:+.2%}, as drawn)")
    b.check("|achieved rate / planned - 1|", abs(achieved / planned_rate - 1) * 100, "<=", 1.0, "%")
    b.check("|CV of send gaps - 1|", abs(cv - 1), "<=", 0.05)
    b.check("requests that failed", sum(r[3] != "ok" for r in rows), "<=", 0)
    b.finish()


if __name__ == "__main__":
    main()
