"""Synthetic prompt text of a requested length.

Each word below is a single token for Llama-2's tokenizer when preceded by a space, and the emulator counts one
token per word, so a prompt of n words is close to n tokens on real servers and exact on the emulator.
Prompts start with words drawn from the request's own random stream, so that no two requests share a prefix
and no accidental prefix-cache hit flatters TTFT.
"""

from __future__ import annotations

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


def make_prompt(n_tokens: int, uid: int, seed: int) -> str:
    rng = random.Random(seed * 1_000_003 + uid)
    return " ".join(rng.choices(WORDS, k=n_tokens))
