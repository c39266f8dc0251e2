"""How exactly loadgen measures TTFT and TPOT: against a server that logs its true send times.

64 concurrent streams; the server sends the first event 50 ms after reading each request, then one token every
10 ms. Bounds: median |ttft error| <= 2 ms, p99 <= 10 ms; median |tpot error| <= 0.5 ms.

    python benchmarks/timing_accuracy.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import orjson
from common import Bounds, query, run_loadgen, truth_server
from truth_server import prompt_key

from loadgen.target.prompts import make_prompt

STREAMS, TTFT_MS, ITL_MS, OUTPUT, ROUNDS, SEED = 64, 50.0, 10.0, 64, 6, 1

WORKLOAD = f"""
name: timing-accuracy
endpoint: http://127.0.0.1:9/v1
seed: {SEED}
load: {{arrival: closed, concurrency: {STREAMS}}}
requests: {{prompt_tokens: 128, output_tokens: {OUTPUT}}}
stop: {{requests: {STREAMS * ROUNDS}}}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        workload, db, log = tmp_path / "w.yaml", tmp_path / "r.duckdb", tmp_path / "truth.jsonl"
        workload.write_text(WORKLOAD)
        with truth_server(TTFT_MS, ITL_MS, log) as url:
            run_loadgen(workload, url, db)
        truth = {}
        for line in log.read_bytes().splitlines():
            t = orjson.loads(line)
            truth[t["key"]] = t
        rows = query(db, "SELECT request_id, prompt_tokens, ttft_ms, tpot_ms FROM requests WHERE status = 'ok'")
    ttft_err, tpot_err = [], []
    for rid, prompt_tokens, ttft, tpot in rows:
        t = truth[prompt_key(make_prompt(prompt_tokens, rid, SEED))]
        sent = t["sent"]
        ttft_err.append(abs(ttft - (sent[0] - t["recv"]) * 1000))
        tpot_err.append(abs(tpot - (sent[-1] - sent[0]) * 1000 / (len(sent) - 1)))
    b = Bounds(f"timing accuracy: {len(rows)} requests, {STREAMS} streams, A={TTFT_MS:.0f} ms, B={ITL_MS:.0f} ms")
    b.check("requests matched to the server's log", len(rows), ">=", STREAMS * ROUNDS)
    b.check("median |ttft_ms - truth|", float(np.median(ttft_err)), "<=", 2.0, "ms")
    b.check("p99 |ttft_ms - truth|", float(np.percentile(ttft_err, 99)), "<=", 10.0, "ms")
    b.check("median |tpot_ms - truth|", float(np.median(tpot_err)), "<=", 0.5, "ms")
    print(f"  (p99 |tpot_ms - truth| {np.percentile(tpot_err, 99):.3f} ms, max |ttft error| {max(ttft_err):.3f} ms)")
    b.finish()


if __name__ == "__main__":
    main()
