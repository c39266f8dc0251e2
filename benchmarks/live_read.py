"""What the live view's read costs on a long run's database: a synthetic run of 100,000 ok requests of 128 streamed
events each (12.8 million events), read as the live view reads it (summary, run_summary and errors in one snapshot).

The live view spaces its reads so that they take at most a tenth of the time (loadgen/live/feed.py), so the read's
cost sets how often a long run's table refreshes. Bound: the slowest of three reads <= 5 s (a refresh at least
every 50 s at this size).

    python benchmarks/live_read.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import Bounds

from loadgen.live.feed import COST_SHARE, LiveFeed
from loadgen.store import Store

REQUESTS = 100_000
EVENTS = 128  # per request, one every 10 ms after a 20 ms first token
READ_BOUND_S = 5.0


def fill(store: Store) -> None:
    con = store.con
    con.execute("INSERT INTO runs VALUES ('r', 'w', 'e', now(), NULL, 'running', '{}', NULL, NULL)")
    con.execute(
        "INSERT INTO requests (run_id, request_id, stage, warmup, scheduled_s, sent_s, first_token_s, last_token_s, "
        "end_s, prompt_tokens, max_tokens, output_tokens, ttft_ms, tpot_ms, e2e_ms, lag_ms, ttft_sched_ms, slo_ok, "
        "status) SELECT 'r', i, 'main', false, i * 0.05, i * 0.05, i * 0.05 + 0.02, i * 0.05 + 1.29, i * 0.05 + 1.3, "
        f"512, {EVENTS}, {EVENTS}, 20 + random(), 10 + random(), 1300, 0.5, 20, true, 'ok' FROM range({REQUESTS}) t(i)"
    )
    con.execute(
        f"INSERT INTO events SELECT 'r', i // {EVENTS}, i % {EVENTS}, (i // {EVENTS}) * 0.05 + 0.02 + (i % {EVENTS}) "
        f"* 0.01, 1, CASE WHEN i % {EVENTS} = 0 THEN NULL ELSE 10 + random() END FROM range({REQUESTS * EVENTS}) t(i)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "long.duckdb")
        try:
            fill(store)
            feed = LiveFeed(store.con, "r")
            reads = []
            for _ in range(3):
                began = time.perf_counter()
                read = feed.read()
                reads.append(time.perf_counter() - began)
            assert read.overall is not None and read.overall["requests"] == REQUESTS
        finally:
            store.close()
    b = Bounds(f"live view read: {REQUESTS:,} requests, {REQUESTS * EVENTS:,} events")
    print(
        f"  (reads {', '.join(f'{s:.2f}' for s in reads)} s: the table refreshes about every "
        f"{max(reads) / COST_SHARE:.0f} s at this size)"
    )
    b.check("slowest of three reads", max(reads), "<=", READ_BOUND_S, "s")
    b.finish()


if __name__ == "__main__":
    main()
