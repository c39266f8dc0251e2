"""How fast a trace is read and scheduled: a synthetic two-million-row Azure-format trace, planned end to end.

Bound: >= 1,000,000 rows/s from the file to planned requests (the week-long Azure 2024 traces hold 17-27 million
rows; the reader streams batches of 65,536 rows and never holds the trace whole).

    python benchmarks/trace_speed.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import Bounds

from loadgen.schedule.plan import plan_stage
from loadgen.spec.workload import StageSpec
from loadgen.trace.synth import azure_csv

ROWS = 2_000_000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        azure_csv(path, ROWS, rate=50.0, seed=1)
        stage = StageSpec.model_validate(
            {
                "name": "s",
                "api": "completions",
                "model": None,
                "slo": {},
                "stop": {},
                "requests": {},
                "load": {"arrival": "trace", "trace": {"path": str(path)}},
            }
        )
        best = 0.0
        for _ in range(3):  # the best of three: the machine is shared
            t = time.perf_counter()
            n = sum(1 for _ in plan_stage(stage, 1, 0))
            best = max(best, n / (time.perf_counter() - t))
    b = Bounds(f"trace speed: {ROWS:,} rows, Azure format, read and planned")
    b.check("rows planned", n, ">=", ROWS)
    b.check("rows/s (best of 3)", best, ">=", 1_000_000, "rows/s")
    b.finish()


if __name__ == "__main__":
    main()
