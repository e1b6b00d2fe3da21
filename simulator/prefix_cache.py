"""Automatic prefix caching in the manner of vLLM: full blocks of prompt tokens, hashed cumulatively, kept in an LRU."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def block_hashes(tokens: Sequence[str], block_size: int) -> list[int]:
    """One hash per full block; each covers the block and everything before it, so equal hashes mean equal prefixes.

    Within one process only (built on `hash()`), which is all an in-memory cache needs.
    """
    hashes: list[int] = []
    parent = 0
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash((parent, tuple(tokens[start : start + block_size])))
        hashes.append(parent)
    return hashes


class PrefixCache:
    """Bounded LRU of block hashes.

    `lookup` counts how many leading blocks are cached; `insert` records a computed prompt's blocks. Like vLLM, a
    prompt never counts as entirely cached: at least its last token is always recomputed.
    """

    def __init__(self, capacity_blocks: int, block_size: int) -> None:
        self.capacity = capacity_blocks
        self.block_size = block_size
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup(self, hashes: list[int], prompt_tokens: int) -> int:
        """Number of prompt tokens served from the cache."""
        hits = 0
        blocks = self._blocks
        for h in hashes:
            if h not in blocks:
                break
            hits += 1
        cached = hits * self.block_size
        if cached >= prompt_tokens:
            cached = ((prompt_tokens - 1) // self.block_size) * self.block_size
        return max(cached, 0)

    def insert(self, hashes: list[int]) -> None:
        blocks = self._blocks
        for h in hashes:
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)

    def clear(self) -> None:
        self._blocks.clear()
