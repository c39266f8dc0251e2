"""A Prometheus histogram as the emulator's /metrics page writes it (cumulative buckets, _sum, _count)."""

from __future__ import annotations

import bisect

# vLLM V1's buckets for vllm:time_to_first_token_seconds (vllm-project/vllm vllm/v1/metrics/loggers.py)
TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)  # fmt: skip


class Histogram:
    def __init__(self, name: str, about: str, buckets: tuple[float, ...]):
        self.name, self.about, self.buckets = name, about, buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.about}", f"# TYPE {self.name} histogram"]
        total = 0
        for bound, n in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            total += n
            out.append(f'{self.name}_bucket{{le="{bound}"}} {total}')
        return [*out, f"{self.name}_sum {self.sum!r}", f"{self.name}_count {total}"]
