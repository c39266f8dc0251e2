"""How many streamed tokens per second loadgen consumes: 256 streams from a server with no delays.

128 tokens in and 256 out per request; the server shares this machine. Bound: >= 50,000 tokens/s. When
loadgen's own event loop cannot keep its timing within 1 ms it says so in the run's note (printed here).

    python benchmarks/capacity.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import Bounds, query, run_loadgen, truth_server

STREAMS, OUTPUT, ROUNDS = 256, 256, 8

WORKLOAD = f"""
name: capacity
endpoint: http://127.0.0.1:9/v1
load: {{arrival: closed, concurrency: {STREAMS}}}
requests: {{prompt_tokens: 128, output_tokens: {OUTPUT}}}
stop: {{requests: {STREAMS * ROUNDS}}}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workload, db = Path(tmp) / "w.yaml", Path(tmp) / "r.duckdb"
        workload.write_text(WORKLOAD)
        with truth_server(0, 0) as url:
            run_loadgen(workload, url, db)
        ((tokens_per_s, errors, requests),) = query(db, "SELECT output_tokens_per_s, errors, requests FROM summary")
        ((events,),) = query(db, "SELECT count(*) FROM events")
        ((delay, note),) = query(db, "SELECT client_delay_p99_ms, note FROM runs")
    b = Bounds(f"capacity: {STREAMS} streams, 128 in / {OUTPUT} out, server without delays")
    b.check("requests completed without error", requests - errors, ">=", STREAMS * ROUNDS)
    b.check("events stored", events, ">=", STREAMS * ROUNDS * OUTPUT)
    b.check("output tokens/s consumed", tokens_per_s, ">=", 50_000, "tok/s")
    print(f"  loadgen's own event-loop delay p99: {delay:.2f} ms; flagged in the run: {'yes' if note else 'no'}")
    b.finish()


if __name__ == "__main__":
    main()
