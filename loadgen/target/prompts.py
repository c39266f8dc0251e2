"""Synthetic prompts of a requested length: text, or token IDs for exact lengths without a tokenizer.

Text: each word below is a single token for Llama-2's tokenizer when preceded by a space, and the emulator counts
one token per word, so a prompt of n words is close to n tokens on real servers and exact on the emulator.
Token IDs (completions only) are exact everywhere; they are drawn from a range every Llama-family vocabulary has.

Prompts are unique unless the trace says they share a prefix: a plain request's tokens come from its own random
stream, so no accidental prefix-cache hit flatters TTFT; a trace request with `hash_ids` is built from blocks of
the trace format's size (Mooncake 512 tokens, Bailian 16), one per hash id, and the same id gives the same
block, so prefix caching on the server behaves as in the trace.
"""

from __future__ import annotations

import functools
import random

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there one all we their has been would more when if will so what about up out them "
    "time can some only other new could these two may first then do any like my now over such our man me even "
    "most made after also did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year off come "
    "since against go came right used take three"
).split()
TOKEN_IDS = range(1000, 30000)


def _draw(rng: random.Random, n: int, text: bool) -> list:
    return rng.choices(WORDS, k=n) if text else rng.choices(TOKEN_IDS, k=n)


@functools.lru_cache(maxsize=4096)
def _block(seed: int, block_id: int, text: bool, size: int) -> tuple:
    return tuple(_draw(random.Random(f"block:{seed}:{block_id}"), size, text))


def _own(seed: int, uid: int | str) -> random.Random:
    """A prompt's own random stream: a request's (uid: its ID) or a named part of a session's ("system:2")."""
    return random.Random(seed * 1_000_003 + uid if isinstance(uid, int) else f"{uid}:{seed}")


def make_prompt(
    n_tokens: int,
    uid: int | str,
    seed: int,
    text: bool = True,
    prefix: tuple[int, ...] | None = None,
    block: int = 512,
) -> str | list[int]:
    if prefix:
        tokens: list = []
        for block_id in prefix:
            tokens.extend(_block(seed, block_id, text, block))
            if len(tokens) >= n_tokens:
                break
        if len(tokens) < n_tokens:  # the trace's blocks cover less than its length: finish uniquely
            tokens.extend(_draw(_own(seed, uid), n_tokens - len(tokens), text))
        tokens = tokens[:n_tokens]
    else:
        tokens = _draw(_own(seed, uid), n_tokens, text)
    return " ".join(tokens) if text else tokens
