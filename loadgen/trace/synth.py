"""Synthetic traces (Azure CSV, Mooncake and Bailian JSONL), so that shipped examples replay traces the project
makes itself."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

START = datetime(2026, 1, 1, 12, 0, 0)


def azure_csv(
    out: Path,
    rows: int,
    rate: float,
    seed: int = 1,
    burstiness: float = 1.0,
    prompt_median: int = 1020,
    output_median: int = 129,
) -> None:
    """Gamma arrivals at `rate` per second (burstiness = the shape: 1 is Poisson), log-normal lengths around
    the medians (the Azure 2023 conversation trace has a median of about 1,020 prompt and 129 output tokens)."""
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(burstiness, 1.0 / (rate * burstiness), rows)
    gaps[0] = 0.0
    t_100ns = np.round(np.cumsum(gaps) * 1e7).astype(np.int64)  # Azure 2023 stamps have 7 fractional digits
    prompt = np.clip(np.round(rng.lognormal(math.log(prompt_median), 0.9, rows)), 1, 8000).astype(int)
    output = np.clip(np.round(rng.lognormal(math.log(output_median), 0.8, rows)), 1, 2000).astype(int)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        f.write("TIMESTAMP,ContextTokens,GeneratedTokens\r\n")
        for t, p, o in zip(t_100ns.tolist(), prompt.tolist(), output.tolist(), strict=True):
            sec, frac = divmod(t, 10_000_000)
            stamp = (START + timedelta(seconds=sec)).strftime("%Y-%m-%d %H:%M:%S")
            f.write(f"{stamp}.{frac:07d},{p},{o}\r\n")


def mooncake_jsonl(out: Path, rows: int, rate: float, seed: int = 1, turns: int = 4) -> None:
    """Conversations in the Mooncake format: each turn's prompt repeats the conversation so far, so its first
    512-token blocks (hash ids) are those of the turn before; arrivals are Poisson at `rate` per second."""
    rng = np.random.default_rng(seed)
    t = 0.0
    next_block = 0
    sessions: list[tuple[int, list[int]]] = []  # (context tokens, block ids) of open conversations
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for _ in range(rows):
            if sessions and rng.random() < 1 - 1 / turns:
                context, blocks = sessions.pop(int(rng.integers(len(sessions))))
            else:
                context, blocks = 0, []
            new = int(np.clip(rng.lognormal(math.log(600), 0.8), 16, 2000))
            context += new
            need = -(-context // 512)
            blocks = blocks[: (context - new) // 512]  # only blocks that were full stay the same
            while len(blocks) < need:
                blocks.append(next_block)
                next_block += 1
            output = int(np.clip(rng.lognormal(math.log(250), 0.7), 1, 1000))
            f.write(
                f'{{"timestamp": {int(t * 1000)}, "input_length": {context}, "output_length": {output}, '
                f'"hash_ids": {blocks}}}\n'
            )
            if context + output < 3500:
                sessions.append((context + output, blocks))
            t += rng.exponential(1 / rate)


def bailian_jsonl(
    out: Path, rows: int, rate: float, seed: int = 1, shared: float = 0.0, prompt: int = 2048, output: int = 32
) -> None:
    """Single-turn requests in the Bailian format (16-token blocks) whose first `shared` share of blocks is one
    prompt all of them open with (a system prompt), the rest their own; Poisson arrivals at `rate` per second."""
    rng = np.random.default_rng(seed)
    blocks = -(-prompt // 16)
    common = int(round(blocks * shared))
    t = 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for i in range(rows):
            own = range(1_000_000 * (i + 1), 1_000_000 * (i + 1) + blocks - common)
            ids = [*range(common), *own]
            f.write(
                f'{{"chat_id": {i + 1}, "parent_chat_id": -1, "timestamp": {t:.6f}, "input_length": {prompt}, '
                f'"output_length": {output}, "type": "text", "turn": 1, "hash_ids": {ids}}}\n'
            )
            t += rng.exponential(1 / rate)
