"""What a trace holds: rows, span, arrival rate over time and length percentiles, read in one streaming pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadgen.spec.errors import SpecError
from loadgen.spec.workload import TraceSpec
from loadgen.trace.readers import batches, check

MAX_LENGTH = 1 << 20


@dataclass
class TraceInfo:
    rows: int
    span_s: float
    rate_per_s: float
    rate_over_time: list[float]  # requests/s in equal time bins
    bin_s: float
    prompt_pcts: dict[int, int]
    output_pcts: dict[int, int]
    bad_rows: int  # malformed rows, left out of every figure


def detect_format(path: Path) -> str:
    if path.suffix == ".jsonl":
        try:
            with path.open("rb") as f:
                first = f.readline()
        except OSError as e:
            raise SpecError(str(path), f"cannot read trace: {e}") from None
        return "bailian" if b'"chat_id"' in first else "mooncake"
    try:
        with path.open("r", encoding="utf-8") as f:
            header = f.readline()
    except OSError as e:
        raise SpecError(str(path), f"cannot read trace: {e}") from None
    if header.startswith("Timestamp,Model"):
        return "burstgpt"
    if header.startswith("TIMESTAMP"):
        return "azure"
    raise SpecError(str(path), "cannot tell the trace format from its first line; give --format", line=1)


def _pcts(hist: np.ndarray, qs: tuple[int, ...]) -> dict[int, int]:
    cum = np.cumsum(hist)
    total = cum[-1] if len(cum) else 0
    return {q: int(np.searchsorted(cum, q / 100 * total)) if total else 0 for q in qs}


def _guess(path: Path) -> str:
    try:
        return detect_format(path)
    except SpecError:
        return "unknown"


def trace_info(path: Path, fmt: str | None = None, bins: int = 48) -> TraceInfo:
    spec = TraceSpec(path=str(path), format=fmt or detect_format(path), max_context=None, on_bad_rows="skip")
    bad = check(spec).bad_rows
    if fmt is not None and _guess(path) not in (fmt, "unknown"):
        raise SpecError(
            str(path), f"this is not a {fmt} trace: it reads as {_guess(path)} (give --format {_guess(path)})"
        )
    prompt_hist = np.zeros(MAX_LENGTH + 1, np.int64)
    output_hist = np.zeros(MAX_LENGTH + 1, np.int64)
    stamps: list[np.ndarray] = []  # per batch, thinned to keep memory bounded on week-long traces
    rows = 0
    first = last = None
    for b in batches(spec):
        rows += len(b.ts_ns)
        first = int(b.ts_ns[0]) if first is None else first
        last = int(b.ts_ns[-1])
        prompt_hist += np.bincount(np.minimum(b.prompt, MAX_LENGTH), minlength=MAX_LENGTH + 1)
        output_hist += np.bincount(np.minimum(b.output, MAX_LENGTH), minlength=MAX_LENGTH + 1)
        stamps.append(b.ts_ns)
    if rows == 0 or first is None or last is None:
        detail = f": all {bad} rows are malformed for the {spec.format} format" if bad else ""
        raise SpecError(str(path), f"the trace has no rows{detail}")
    span = (last - first) / 1e9
    bin_s = max(span / bins, 1e-9)
    counts = np.zeros(bins, np.int64)
    for ts in stamps:
        counts += np.bincount(np.minimum(((ts - first) / 1e9 / bin_s).astype(np.int64), bins - 1), minlength=bins)
    qs = (10, 50, 90, 99)
    return TraceInfo(
        rows=rows,
        span_s=span,
        rate_per_s=(rows - 1) / span if span > 0 else 0.0,
        rate_over_time=(counts / bin_s).tolist(),
        bin_s=bin_s,
        prompt_pcts=_pcts(prompt_hist, qs),
        output_pcts=_pcts(output_hist, qs),
        bad_rows=bad,
    )
