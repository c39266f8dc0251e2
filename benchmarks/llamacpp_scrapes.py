"""Scraping a saturated llama.cpp engine: does a busy engine cost server-metric samples?

llama.cpp answers /metrics from its main loop, between engine steps, so while it computes a long step a scrape
waits. Here the packaged engine (endpoints/llamacpp-gemma.yaml: Gemma-3-270M, 8 slots, 1 CPU thread) is kept
saturated by 8 users sending 1,000-token prompts back to back, and the run's own samples say how the sampler
fared: the gaps between consecutive samples (a gap is the 0.25 s wait plus one fetch, as one scrape is in flight
at a time), how many fetches took longer than the old 2 s timeout (each of those was a lost sample before), and
whether the counters' rise from the baseline to the final scrape equals the run's tokens.

Bounds: no scrape failed (the run's note says nothing of server metrics); the counters rise by exactly the run's
prompt, cached and output tokens; a sample at or before the first send and one after the last end.

    python benchmarks/llamacpp_scrapes.py                  # 8 users, 1,000-token prompts: the slots saturated
    python benchmarks/llamacpp_scrapes.py --users 24 --prompt 256 --requests 48   # 16 waiting for a slot
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import HERE, Bounds, query, run_loadgen

INTERVAL_S = 0.25  # the run's --server-metrics default
OLD_TIMEOUT_S = 2.0
WORKLOAD = """name: scrape-saturation
endpoint: {endpoint}
api: completions
load: {{arrival: closed, concurrency: {users}}}
requests: {{prompt_tokens: {prompt}, output_tokens: 32}}
stop: {{requests: {requests}}}
"""
RISES = """
SELECT arg_max(value, t_s) - arg_min(value, t_s) FROM server_metrics WHERE name = 'llamacpp:{}'
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=8, help="closed-loop users (the engine has 8 slots)")
    ap.add_argument("--prompt", type=int, default=1000, help="prompt tokens per request")
    ap.add_argument("--requests", type=int, default=16)
    args = ap.parse_args()
    endpoint = HERE.parent / "endpoints" / "llamacpp-gemma.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        workload, db = Path(tmp) / "w.yaml", Path(tmp) / "r.duckdb"
        workload.write_text(
            WORKLOAD.format(endpoint=endpoint, users=args.users, prompt=args.prompt, requests=args.requests)
        )
        run_loadgen(workload, None, db, quiet=True)
        ((note,),) = query(db, "SELECT coalesce(note, '') FROM runs")
        ((first_sent, last_end, prompt, cached, output),) = query(
            db,
            "SELECT min(sent_s), max(end_s), sum(server_prompt_tokens), sum(cached_tokens), sum(output_tokens) "
            "FROM requests WHERE status = 'ok'",
        )
        times = [t for (t,) in query(db, "SELECT DISTINCT t_s FROM server_metrics ORDER BY t_s")]
        ticks = times[1:-1]  # neither the baseline nor the final scrape waits an interval
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        fetches = sorted(g - INTERVAL_S for g in gaps)
        rise = {n: query(db, RISES.format(n))[0][0] for n in ("prompt_tokens_total", "prompt_tokens_cached_total")}
        ((predicted,),) = query(db, RISES.format("tokens_predicted_total"))
    span = last_end - first_sent
    print(f"load: {first_sent:.2f}-{last_end:.2f} s ({span:.1f} s), {prompt} prompt tokens, {output} output tokens")
    print(
        f"samples: {len(times)} (baseline at {times[0]:.2f} s, final at {times[-1]:.2f} s), {len(times) / span:.2f}/s"
    )
    print(
        f"fetch (gap - {INTERVAL_S} s): p50 {fetches[len(fetches) // 2]:.2f} s, max {fetches[-1]:.2f} s; "
        f"{sum(f > OLD_TIMEOUT_S for f in fetches)} of {len(fetches)} over {OLD_TIMEOUT_S} s"
    )
    b = Bounds("scrapes of a saturated llama.cpp engine")
    b.check("scrape problems noted", float("server metrics" in note), "<=", 0)
    b.check(
        "prompt tokens: rise - run's",
        abs(rise["prompt_tokens_total"] + rise["prompt_tokens_cached_total"] - prompt),
        "<=",
        0,
    )
    b.check("cached tokens: rise - run's", abs(rise["prompt_tokens_cached_total"] - cached), "<=", 0)
    b.check("output tokens: rise - run's", abs(predicted - output), "<=", 0)
    b.check("baseline after the first send (s)", times[0] - first_sent, "<=", 0, "s")
    b.check("final scrape after the last end (s)", times[-1] - last_end, ">=", 0, "s")
    b.finish()


if __name__ == "__main__":
    main()
