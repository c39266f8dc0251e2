"""Exact token counts with a configured tokenizer (`requests.tokenizer: tokenizer.json`, Hugging Face format).

With it, text prompts are made to exactly the planned number of tokens, and streams that report no usage have
their output counted in tokens rather than events. It needs the `tokenizers` package (`pip install tokenizers`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from loadgen.spec.errors import SpecError
from loadgen.target.prompts import make_prompt


class PromptTokenizer:
    def __init__(self, path: str):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise SpecError(path, "requests.tokenizer needs the tokenizers package: pip install tokenizers") from None
        if not Path(path).is_file():
            raise SpecError(path, "tokenizer file not found (requests.tokenizer)")
        try:
            self.tok = Tokenizer.from_file(path)
        except Exception as e:  # the library raises its own exception types for a bad file
            raise SpecError(path, f"not a tokenizer.json file: {e}") from None

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def prompt(self, n_tokens: int, uid: int | str, seed: int, prefix: tuple[int, ...] | None, block: int = 512) -> str:
        """A text prompt of exactly n_tokens tokens (as close as single words allow when a word splits)."""
        words = n_tokens
        best = make_prompt(words, uid, seed, True, prefix, block)
        for _ in range(8):  # each round corrects by the difference; most words are one token, so it converges fast
            n = self.count(best)
            if n == n_tokens:
                return best
            words = max(1, words + (n_tokens - n))
            best = make_prompt(words, uid, seed, True, prefix, block)
        return best


@functools.cache
def tokenizer(path: str) -> PromptTokenizer:
    """The tokenizer at `path`, read once per process (checked before a run, used by its Targeter)."""
    return PromptTokenizer(path)
