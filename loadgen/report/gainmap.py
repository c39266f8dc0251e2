"""The disaggregation gain map: prompt x output length, one panel per link speed and load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from loadgen.analysis.disagg import Prediction  # noqa: E402
from loadgen.report.figures import plain_numbers  # noqa: E402


def gain_map(preds: Sequence[Prediction], title: str, out: Path) -> Path:
    """One panel per link speed (columns) and load (rows)."""
    links = sorted({p.gbps for p in preds})
    loads = sorted({p.load for p in preds})
    prompts = sorted({p.prompt for p in preds})
    outputs = sorted({p.output for p in preds})
    fig, axes = plt.subplots(len(loads), len(links), figsize=(4.2 * len(links), 4.0 * len(loads)), squeeze=False)
    for row, load in zip(axes, loads, strict=True):
        for ax, gbps in zip(row, links, strict=True):
            grid = np.full((len(outputs), len(prompts)), np.nan)
            for p in preds:
                if p.gbps == gbps and p.load == load:
                    grid[outputs.index(p.output), prompts.index(p.prompt)] = 100 * p.gain
            im = ax.imshow(grid, origin="lower", cmap="RdYlGn", vmin=-50, vmax=50, aspect="auto")
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, f"{v:+.0f}%", ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(prompts)), [str(x) for x in prompts], fontsize=8)
            ax.set_yticks(range(len(outputs)), [str(x) for x in outputs], fontsize=8)
            ax.set(xlabel="prompt tokens", title=f"{gbps:g} Gb/s, load {load}")
        row[0].set_ylabel("output tokens")
    fig.colorbar(im, ax=axes.ravel().tolist(), label="E2E gain over the better platform alone (%)")
    fig.suptitle(title)
    plain_numbers(fig)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
