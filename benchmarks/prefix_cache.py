"""Prefix reuse on the emulators: what a cached prompt prefix is worth, and whether the cache sees what a trace says.

1. 2048-token chat prompts, cold (nothing shared) and with their first 90% sent before, on the emulated H100:
   bound: the cached prompts' TTFT p50 <= 0.25x the cold ones'. On the emulated GroqRack (no prefix cache) the
   same prompts: bound: TTFT within 2% either way.
2. A Bailian-format trace (written here: conversations whose turns resend the conversation so far, over a few
   shared system prompts; 16-token blocks) replayed by `loadgen run` on the emulated H100 with ample KV memory:
   bound: the cache hit share the server reports (sum of usage cached_tokens over prompt tokens) within 2
   percentage points of the ideal computed offline from the trace's hash_ids (a block hits when an earlier
   request had it).

    python benchmarks/prefix_cache.py
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
from common import Bounds, query

from loadgen.launch.background import BackgroundServer
from loadgen.spec import load_endpoint

ROOT = Path(__file__).resolve().parents[1]
PROMPT, SHARED, PAIRS, GROQ_PAIRS = 2048, 0.9, 12, 2
BLOCK = 16
ENDPOINT_AMPLE = """
name: h100-ample-kv
model: llama-2-7b
emulate: {engine: gpu, hardware: h100-sxm, hardware_overrides: {memory_bytes: 800.0e9}}
"""


def ttft_ms(url: str, words: list[str]) -> tuple[float, int]:
    """TTFT of one streamed chat request, and the prompt tokens the server says it had cached."""
    body = orjson.dumps(
        {
            "model": "llama-2-7b",
            "messages": [{"role": "user", "content": " ".join(words)}],
            "max_tokens": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }
    )
    req = urllib.request.Request(url + "/chat/completions", data=body, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    first, cached = None, 0
    with urllib.request.urlopen(req) as r:
        for line in r:
            if not line.startswith(b"data: {"):
                continue
            obj = orjson.loads(line[6:])
            if first is None and obj.get("choices") and obj["choices"][0].get("delta", {}).get("content"):
                first = (time.perf_counter() - t) * 1000
            if obj.get("usage"):
                cached = (obj["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    assert first is not None
    return first, cached


def pairs(url: str, n: int, tag: str) -> tuple[list[float], list[float], list[int]]:
    """n cold prompts, each followed by a prompt sharing its first 90%."""
    rng = random.Random(7)
    cold, warm, cached = [], [], []
    shared = int(PROMPT * SHARED)
    for i in range(n):
        words = [f"{tag}{i}w{rng.randrange(10**9)}" for _ in range(PROMPT)]
        cold.append(ttft_ms(url, words)[0])
        t, c = ttft_ms(url, words[:shared] + [f"{tag}{i}new{j}" for j in range(PROMPT - shared)])
        warm.append(t)
        cached.append(c)
    return cold, warm, cached


def medians(endpoint: str, n: int, tag: str) -> tuple[float, float, list[int]]:
    """On a served emulator of the shipped endpoint file: TTFT p50 of n cold prompts and of their 90%-shared
    follow-ups, and the cached tokens it reported for the follow-ups."""
    with tempfile.TemporaryDirectory() as tmp:
        with BackgroundServer(load_endpoint(ROOT / "endpoints" / f"{endpoint}.yaml"), Path(tmp)) as served:
            cold, warm, cached = pairs(served.url, n, tag)
    return statistics.median(cold), statistics.median(warm), cached


def bailian_trace(path: Path, sessions: int = 120, seed: int = 3) -> list[dict]:
    """Conversations of 1-6 turns over 8 system prompts (16-token blocks): each turn's prompt is the one before,
    that turn's answer and a new message. Turns are far apart (seconds), so each parent has ended first."""
    rng = random.Random(seed)
    system = [[10_000 * s + b for b in range(rng.randrange(8, 40))] for s in range(8)]
    next_block = 10**6
    rows = []
    chat_id = 0
    t = 0.0
    for _ in range(sessions):
        blocks = list(rng.choice(system))
        parent = -1
        t += rng.expovariate(2.0)
        at = t
        for turn in range(1, rng.randrange(1, 7) + 1):
            new = rng.randrange(2, 30)  # new blocks: the last answer and the next message
            blocks += list(range(next_block, next_block + new))
            next_block += new
            chat_id += 1
            rows.append(
                {
                    "chat_id": chat_id,
                    "parent_chat_id": parent,
                    "timestamp": round(at, 3),
                    "input_length": len(blocks) * BLOCK,
                    "output_length": 8,
                    "type": "text",
                    "turn": turn,
                    "hash_ids": list(blocks),
                }
            )
            parent = chat_id
            at += rng.uniform(3.0, 8.0)
    rows.sort(key=lambda r: r["timestamp"])
    path.write_text("".join(orjson.dumps(r).decode() + "\n" for r in rows))
    return rows


def ideal_hit_share(rows: list[dict]) -> float:
    seen: set[int] = set()
    hits = total = 0
    for r in rows:
        ids = r["hash_ids"]
        n = 0
        while n < len(ids) and ids[n] in seen:  # a prefix hits block by block, from the start
            n += 1
        hits += n * BLOCK
        total += r["input_length"]
        seen.update(ids)
    return hits / total


def main() -> None:
    b = Bounds("prefix cache on the emulators")
    c50, w50, cached = medians("emulated-h100", PAIRS, "h")
    print(f"  H100, {PROMPT}-token prompts ({PAIRS} of each): cold TTFT p50 {c50:.1f} ms, 90% cached {w50:.1f} ms")
    print(f"    cached tokens the server reported: {sorted(set(cached))}")
    b.check("H100 cached / cold TTFT p50", w50 / c50, "<=", 0.25, "x")
    g_c, g_w, _ = medians("emulated-groqrack", GROQ_PAIRS, "g")
    print(f"  GroqRack, the same prompts ({GROQ_PAIRS} of each): cold TTFT p50 {g_c:.1f} ms, 90% shared {g_w:.1f} ms")
    b.check("GroqRack |shared / cold - 1| TTFT p50", abs(g_w / g_c - 1), "<=", 0.02)

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rows = bailian_trace(d / "bailian.jsonl")
        (d / "ep.yaml").write_text(ENDPOINT_AMPLE)
        (d / "w.yaml").write_text(
            "name: bailian-replay\nendpoint: ep.yaml\n"
            "load: {arrival: trace, concurrency: 64, trace: {path: bailian.jsonl, format: bailian, "
            "max_context: null}}\n"
        )
        db = d / "r.duckdb"
        res = subprocess.run(
            [sys.executable, "-m", "loadgen", "run", str(d / "w.yaml"), "--db", str(db)],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise SystemExit(f"loadgen run failed ({res.returncode}):\n{res.stderr[-2000:]}")
        ((cached_sum, prompt_sum, n, ok),) = query(
            db,
            "SELECT sum(cached_tokens), sum(prompt_tokens), count(*), count(*) FILTER (WHERE status = 'ok') "
            "FROM requests",
        )
    reported, ideal = cached_sum / prompt_sum, ideal_hit_share(rows)
    print(f"  Bailian-format trace: {n} requests ({ok} ok), {sum(r['turn'] == 1 for r in rows)} conversations")
    print(f"    hit share the server reported {reported:.2%}, ideal from hash_ids {ideal:.2%}")
    b.check("requests that failed", n - ok, "<=", 0)
    b.check("|reported - ideal| hit share, percentage points", abs(reported - ideal) * 100, "<=", 2.0, "pp")
    b.finish()


if __name__ == "__main__":
    main()
