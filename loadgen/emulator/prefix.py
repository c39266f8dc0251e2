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
from typing import Protocol


class Seq(Protocol):
    """What a cache reads of a request (engine.Seq): its prompt's keys, and its answer's after them."""

    prompt: int
    target: int
    generated: int
    cancelled: bool
    keys: Sequence[int]
    answer_keys: Sequence[int]


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

    # The engine's three moments (SlotCache has the same):
    def admitted(self, seq: Seq) -> int:
        """Its prompt tokens found cached."""
        return self.lookup(seq.keys, seq.prompt)

    def prefilled(self, seq: Seq) -> None:
        self.insert(seq.keys)

    def retired(self, seq: Seq) -> None:
        # Like vLLM, the blocks its answer filled are cached too, so that a conversation's next turn finds them.
        if not seq.cancelled and seq.generated >= seq.target:
            self.insert(seq.answer_keys)

    def holds(self, keys: Sequence[int]) -> int:
        """Leading blocks of `keys` already here, without counting a query (a KV transfer's check)."""
        n = 0
        for key in keys:
            if key not in self.blocks:
                break
            n += 1
        return n


class SlotCache:
    """llama.cpp's prompt cache, as its server keeps it and the packaged engine showed it: per slot.

    Each slot holds the KV of the last prompt it served. A request takes, of the idle slots, the first (in slot
    order) whose held prompt shares the longest prefix with its own, where that prefix is more than `similarity` of
    its prompt (llama.cpp's --slot-prompt-similarity, 0.1 by default); else the slot released longest ago (of
    equals, the last; a slot never used counts as released first), as llama.cpp's get_available_slot picks. Its
    cached tokens are the prefix it shares with that slot (at most all but its last token). What a slot keeps of a
    request is its prompt and `kept_offset` tokens more (negative: fewer): on Gemma-3 with its chat template, a
    conversation's next turn found its previous prompt less 5 tokens, never the answer (a sliding-window model
    restores from a checkpoint a few tokens before the prompt's end). A new conversation with the same system
    prompt as several idle slots takes the first of them, even where that one holds a conversation still going:
    that conversation's next turn then finds only the system prompt.

    Keys are per token (`block_keys(tokens, 1)`): two prompts share a prefix of n tokens where their n-th keys are
    equal. The server's RAM prompt cache (--cache-ram) is not modelled: the engine's data showed no conversation
    restored from it after its slot was taken.
    """

    block = 1

    def __init__(self, slots: int, similarity: float = 0.1, kept_offset: int = 0):
        self.similarity, self.kept_offset = similarity, kept_offset
        self.held: list[Sequence[int]] = [() for _ in range(slots)]
        self.released = [-1] * slots  # when each slot was last released (a counter; -1: never used)
        self.owner: dict[int, int] = {}  # id(seq) -> its slot
        self.clock = 0
        self.queried_tokens = 0
        self.hit_tokens = 0

    @staticmethod
    def _shared(a: Sequence[int], b: Sequence[int]) -> int:
        """Leading tokens two prompts share: a key stands for its whole prefix, so equal keys at n mean equal up
        to n, and a binary search finds where they part."""
        lo, hi = 0, min(len(a), len(b))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if a[mid - 1] == b[mid - 1]:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def admitted(self, seq: Seq) -> int:
        """The request takes an idle slot; returns its prompt tokens found cached there."""
        keys, prompt = seq.keys, seq.prompt
        busy = set(self.owner.values())
        idle = [s for s in range(len(self.held)) if s not in busy]
        best, longest = None, 0
        for s in idle:  # the first with the longest shared prefix, above the threshold
            shared = self._shared(self.held[s], keys)
            if shared > longest and shared > self.similarity * prompt:
                best, longest = s, shared
        if best is None:  # the least recently released, the last of equals
            best = min(reversed(idle), key=lambda s: self.released[s])
            longest = self._shared(self.held[best], keys)
        self.owner[id(seq)] = best
        cached = min(longest, prompt - 1)
        self.queried_tokens += prompt
        self.hit_tokens += cached
        return cached

    def prefilled(self, seq: Seq) -> None:
        """Nothing to do: the slot already holds it."""

    def retired(self, seq: Seq) -> None:
        """The request is done (or gone): its slot keeps its prompt, `kept_offset` tokens more or fewer."""
        slot = self.owner.pop(id(seq), None)
        if slot is not None:
            self.held[slot] = seq.answer_keys[: max(seq.prompt + self.kept_offset, 0)]
            self.clock += 1
            self.released[slot] = self.clock
