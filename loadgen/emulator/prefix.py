"""A GPU engine's prefix cache, as vLLM's automatic prefix caching keeps it: by blocks of tokens.

A block is keyed by the hash of every token up to and including it (its parent's key and its own tokens), so a
key stands for a whole prefix. Only full blocks are cached. A request's cached prefix is its longest run of
leading blocks already in the cache; those tokens skip prefill compute but still count for attention (the rest
of the prompt is computed at their offset) and for KV memory. Blocks are cached once their prefill is done and
evicted least recently used beyond the cache's capacity in blocks (the engine's KV capacity: vLLM keeps cached
blocks in its free pool, evicting them only when memory is needed).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def block_keys(tokens: Sequence[object], block: int) -> list[int]:
    """One key per full block of `tokens`, each standing for the prefix up to its end."""
    keys: list[int] = []
    parent = 0
    for i in range(0, len(tokens) - block + 1, block):
        parent = hash((parent, tuple(tokens[i : i + block])))
        keys.append(parent)
    return keys


class PrefixCache:
    def __init__(self, capacity_blocks: int, block: int):
        self.capacity = capacity_blocks
        self.block = block
        self.blocks: OrderedDict[int, None] = OrderedDict()
        self.queried_tokens = 0  # prompt tokens looked up (vLLM's prefix_cache_queries)
        self.hit_tokens = 0  # of which found cached (vLLM's prefix_cache_hits)

    def lookup(self, keys: Sequence[int], prompt: int) -> int:
        """Prompt tokens of a request found cached, at most all but the last (whose logits must be computed)."""
        n = 0
        for key in keys:
            if key not in self.blocks:
                break
            self.blocks.move_to_end(key)
            n += 1
        cached = min(n * self.block, prompt - 1)
        self.queried_tokens += prompt
        self.hit_tokens += cached
        return cached

    def insert(self, keys: Sequence[int]) -> None:
        """A prefill is done: its full blocks are cached (the most recently used)."""
        for key in keys:
            self.blocks[key] = None
            self.blocks.move_to_end(key)
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)

    def holds(self, keys: Sequence[int]) -> int:
        """Leading blocks of `keys` already here, without counting a query (a KV transfer's check)."""
        n = 0
        for key in keys:
            if key not in self.blocks:
                break
            n += 1
        return n
