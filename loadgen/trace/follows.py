"""Which earlier request a Mooncake trace's request follows, inferred from its prompt blocks.

A Mooncake trace (kvcache-ai/Mooncake FAST'25) names each prompt's 512-token blocks by hash ids, the same id for
the same block after the same prefix: a tool agent's next call resends its last call's prompt and answer and
adds the tool's result, so its ids begin with that call's full blocks. The rows say nothing more: the parent is
inferred. A request follows the latest earlier one whose full blocks its own begin with, whose prompt and answer
its prompt is at least as long as, and whose last full block that earlier request was the first to have (a block
many requests share, a common system prompt, makes no one a parent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A trace row: (timestamp ns, prompt, output, hash_ids, chat_id, parent_chat_id, turn), as readers.py reads it.
Row = tuple[Any, ...]


@dataclass
class Follows:
    block: int  # tokens per hash id
    rows: int = 0  # rows seen so far (a row's index is its chat id)
    seen: set[int] = field(default_factory=set)  # every block id seen so far
    ends: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)  # a row's own last full block ->
    #   (its index, prompt tokens, output tokens, timestamp)
    turns: dict[int, int] = field(default_factory=dict)  # a row's index -> its turn (1: it follows none)

    def row(self, r: Row) -> Row:
        """The row with its (chat id, parent chat id, turn) filled in, as a Bailian trace's are (-1: no parent)."""
        ts, prompt, output, ids, *_ = r
        index, self.rows = self.rows, self.rows + 1
        parent = -1
        full = min(prompt // self.block, len(ids))  # its full blocks
        for k in range(full - 1, -1, -1):
            hit = self.ends.get(ids[k])
            if hit is not None and prompt >= hit[1] + hit[2] and ts >= hit[3]:
                parent = hit[0]
                break
        if full and ids[full - 1] not in self.seen:
            self.ends[ids[full - 1]] = (index, prompt, output, ts)
        self.seen.update(ids)
        turn = self.turns.get(parent, 0) + 1
        self.turns[index] = turn
        return (ts, prompt, output, ids, index, parent, turn)
