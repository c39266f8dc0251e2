"""Phase models fitted from measured runs: TTFT against prompt length, TPOT and throughput against batch.

Both are piecewise-linear through the measured medians (the `prefill` view at its smallest batch, one request's
TTFT; the `decode` view), extended linearly
beyond the last points. Each model reports its fit error as leave-one-out: every interior point predicted from
its neighbours alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np


def _interp(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    if len(xs) == 1:
        return float(ys[0])
    if x <= xs[0]:
        i = 0
    elif x >= xs[-1]:
        i = len(xs) - 2
    else:
        return float(np.interp(x, xs, ys))
    # Beyond the measured range, along the nearest segment, but never downhill: times and rates do not fall as
    # prompts and batches grow, and two noisy points that say so would extrapolate to nothing (a TTFT of 0 ms).
    slope = max((ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]), 0.0)
    end = 0 if x <= xs[0] else len(xs) - 1
    return float(max(ys[end] + slope * (x - xs[end]), 0.0))


def _loo_error(xs: np.ndarray, ys: np.ndarray) -> float | None:
    """Largest relative error predicting an interior point from the others (None below three points)."""
    if len(xs) < 3:
        return None
    errs = []
    for i in range(1, len(xs) - 1):
        keep = np.arange(len(xs)) != i
        errs.append(abs(_interp(xs[i], xs[keep], ys[keep]) / ys[i] - 1))
    return float(max(errs))


@dataclass
class PhaseModel:
    endpoint: str
    prompts: np.ndarray  # prompt tokens measured (prefill)
    ttft_ms: np.ndarray
    batches: np.ndarray  # batch sizes measured (decode)
    tpot_ms: np.ndarray
    tokens_per_s: np.ndarray

    def ttft(self, prompt: float) -> float:
        return _interp(prompt, self.prompts, self.ttft_ms)

    def tpot(self, batch: float = 1) -> float:
        """Time per output token seen by one request at this load. An engine's throughput grows with the batch
        by tok_s(batch) / tok_s(1); where it grows by less than the batch (at worst not at all: an engine that
        does not batch), requests share it, and a request's tokens come batch x tok_s(1) / tok_s(batch) times
        further apart than alone (decode-phase throughputs, so prefill time does not enter the ratio)."""
        per_token = _interp(batch, self.batches, self.tpot_ms)
        if batch <= 1:
            return per_token
        alone = _interp(1, self.batches, self.tpot_ms)
        slowdown = batch * _interp(1, self.batches, self.tokens_per_s) / _interp(batch, self.batches, self.tokens_per_s)
        return max(per_token, alone * slowdown)

    @property
    def ttft_fit_error(self) -> float | None:
        return _loo_error(self.prompts, self.ttft_ms)

    @property
    def tpot_fit_error(self) -> float | None:
        return _loo_error(self.batches, self.tpot_ms)


def fit(con: duckdb.DuckDBPyConnection, endpoint: str) -> PhaseModel:
    """The endpoint's phase models; KeyError when the database lacks its prefill or decode measurements."""
    pre = con.execute(
        "SELECT prompt_tokens, ttft_p50_ms FROM prefill WHERE endpoint = $1 "
        "AND batch = (SELECT min(batch) FROM prefill WHERE endpoint = $1) ORDER BY 1",
        [endpoint],
    ).fetchall()
    dec = con.execute(
        "SELECT batch, tpot_p50_ms, decode_tokens_per_s FROM decode WHERE endpoint = ? ORDER BY 1", [endpoint]
    ).fetchall()
    if not pre or not dec:
        raise KeyError(endpoint)
    p = np.array(pre, dtype=float)
    d = np.array(dec, dtype=float)
    return PhaseModel(endpoint, p[:, 0], p[:, 1], d[:, 0], d[:, 1], d[:, 2])
