"""One emulator process, pinned to one core, streaming to 500 concurrent streams (loadgen on the other core).

Bounds: at least 20,000 tokens/s delivered, and a median step-release error (how late a step's tokens were
released against the model's step end) of at most 1 ms, so that the emulator is never what limits a run.
The endpoint is an H100 profile made faster (no per-sequence overhead, more bandwidth and compute), so that
batch-500 steps take ~20 ms and the emulator, not the modelled hardware, is what is being measured.

    python benchmarks/emulator_capacity.py
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.request
from pathlib import Path

from common import Bounds, query, run_loadgen

from loadgen.launch.background import BackgroundServer, LaunchError
from loadgen.spec import load_endpoint

STREAMS, PROMPT, OUTPUT, ROUNDS = 500, 32, 128, 3
ENDPOINT = """
name: capacity-emu
emulate:
  engine: gpu
  hardware: h100-sxm
  hardware_overrides: {overhead_per_seq_ms: 0.01, bandwidth: 4.0e12, peak_flops: 2.0e15}
  serving: {max_num_seqs: 512, chunked_prefill: true}
"""
WORKLOAD = f"""
name: emulator-capacity
endpoint: http://127.0.0.1:9/v1
load: {{arrival: closed, concurrency: {STREAMS}}}
requests: {{prompt_tokens: {PROMPT}, output_tokens: {OUTPUT}}}
stop: {{requests: {STREAMS * ROUNDS}}}
"""


def main() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("this benchmark needs two cores: one for the emulator, one for loadgen")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "ep.yaml").write_text(ENDPOINT)
        (t / "w.yaml").write_text(WORKLOAD)
        cores = sorted(os.sched_getaffinity(0))
        try:
            emu = BackgroundServer(load_endpoint(t / "ep.yaml"), t, cores={cores[0]})
        except LaunchError as e:
            raise SystemExit(str(e)) from None
        with emu:
            os.sched_setaffinity(0, {cores[1]})  # loadgen, a child of this process, runs on the other core
            run_loadgen(t / "w.yaml", emu.url, t / "r.duckdb", quiet=True)
            metrics = urllib.request.urlopen(emu.url.removesuffix("/v1") + "/metrics").read().decode()
        ((tok_s, requests, errors, tpot),) = query(
            t / "r.duckdb", "SELECT output_tokens_per_s, requests, errors, tpot_p50_ms FROM summary"
        )
    p50 = float(re.search(r'release_error_ms\{quantile="0.5"\} (\S+)', metrics).group(1))
    p99 = float(re.search(r'release_error_ms\{quantile="0.99"\} (\S+)', metrics).group(1))
    b = Bounds(f"emulator capacity: one core, {STREAMS} streams, {PROMPT} in / {OUTPUT} out")
    b.check("requests completed without error", requests - errors, ">=", STREAMS * ROUNDS)
    b.check("tokens/s streamed by one emulator process", tok_s, ">=", 20_000, "tok/s")
    b.check("median step-release error", p50, "<=", 1.0, "ms")
    print(f"  (step-release error p99 {p99:.2f} ms; TPOT p50 seen by loadgen {tpot:.1f} ms)")
    b.finish()


if __name__ == "__main__":
    main()
