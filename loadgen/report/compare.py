"""Comparing two runs or endpoints: p50 and p90 of TTFT, TPOT and E2E with bootstrap confidence intervals."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from loadgen.store.schema import counts

METRICS = ("ttft_ms", "tpot_ms", "e2e_ms")
RESAMPLES = 2000


@dataclass
class Delta:
    metric: str
    quantile: int
    a: float
    b: float
    delta: float  # b - a
    low: float  # 95% bootstrap interval of the delta
    high: float


def _values(con: duckdb.DuckDBPyConnection, who: str, metric: str) -> np.ndarray:
    rows = con.execute(
        f"SELECT r.{metric} FROM requests r JOIN runs ru USING (run_id) "
        f"WHERE (r.run_id = ? OR ru.endpoint = ?) AND {counts('r')} AND r.{metric} IS NOT NULL",
        [who, who],
    ).fetchall()
    return np.array([r[0] for r in rows], dtype=float)


def compare(con: duckdb.DuckDBPyConnection, a: str, b: str, seed: int = 0) -> list[Delta]:
    """`a` and `b` are run IDs or endpoint names; a metric either side lacks is left out."""
    for who in (a, b):
        (n,) = con.execute("SELECT count(*) FROM runs WHERE run_id = ? OR endpoint = ?", [who, who]).fetchone()
        if n == 0:
            raise KeyError(who)
    rng = np.random.default_rng(seed)
    out = []
    for metric in METRICS:
        va, vb = _values(con, a, metric), _values(con, b, metric)
        if len(va) == 0 or len(vb) == 0:
            continue
        ia = rng.integers(0, len(va), (RESAMPLES, len(va)))
        ib = rng.integers(0, len(vb), (RESAMPLES, len(vb)))
        for q in (50, 90):
            qa, qb = float(np.percentile(va, q)), float(np.percentile(vb, q))
            boot = np.percentile(vb[ib], q, axis=1) - np.percentile(va[ia], q, axis=1)
            low, high = np.percentile(boot, [2.5, 97.5])
            out.append(Delta(metric, q, qa, qb, qb - qa, float(low), float(high)))
    return out
