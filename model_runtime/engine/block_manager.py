"""The paged-cache block manager with prefix caching; plain data, no torch.

The latent cache is cut into blocks of `block_size` token slots. A sequence owns a
block table (block ids in order). A block that is full and computed gets a hash that
chains over every token before it (`hash((parent_hash, tokens))`), so two sequences
that share a prefix share its blocks: the second one finds them by hash and skips
their prefill. Full prompt blocks still being prefilled are `pending`: a request
whose next block is pending waits for it (`is_prefix_pending`) rather than computing
the same prefix again, which is what a swarm's simultaneous sub-agents would do. A block whose last owner leaves stays in the free list with its hash
(least recently freed is reused first) until it is reallocated, so a prefix survives
between requests as long as memory allows.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from model_runtime.engine.sequence import Sequence

NO_HASH = -1


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int = NO_HASH
    token_ids: tuple[int, ...] = ()
    pending_hash: int = NO_HASH  # the hash it will get once computed


@dataclass
class PrefixCacheStats:
    """Prompt tokens looked up in the prefix cache and those found."""

    num_queried_tokens: int = 0
    num_hit_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_queried_tokens if self.num_queried_tokens else 0.0


def chain_hash(parent_hash: int, token_ids: tuple[int, ...]) -> int:
    return hash((parent_hash, token_ids))


@dataclass
class BlockManager:
    num_blocks: int
    block_size: int
    enable_prefix_caching: bool = True
    stats: PrefixCacheStats = field(default_factory=PrefixCacheStats)

    def __post_init__(self) -> None:
        self.blocks = [Block(i) for i in range(self.num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(self.num_blocks))
        self.hash_to_block: dict[int, int] = {}
        self.pending: dict[int, int] = {}  # hash -> blocks being computed with it

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids of the longest cached prefix; never the whole prompt, since the
        last token must be computed to get its logits."""
        return self._lookup(seq)[0]

    def _lookup(self, seq: Sequence) -> tuple[list[int], int | None]:
        """Cached prefix blocks, and the chain hash of the first block that missed."""
        if not self.enable_prefix_caching:
            return [], None
        hits, parent = [], NO_HASH
        for start in range(0, seq.num_tokens - 1 - self.block_size + 1, self.block_size):
            tokens = tuple(seq.token_ids[start : start + self.block_size])
            parent = chain_hash(parent, tokens)
            block_id = self.hash_to_block.get(parent)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                return hits, parent
            hits.append(block_id)
        return hits, None

    def is_prefix_pending(self, seq: Sequence) -> bool:
        """Whether the block after `seq`'s cached prefix is being computed by another
        sequence right now; admitting `seq` a little later saves recomputing it."""
        _, missed = self._lookup(seq)
        return missed is not None and missed in self.pending

    def can_allocate(self, seq: Sequence) -> bool:
        hits = self._cached_prefix(seq)
        num_hits_free = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        num_new = self.blocks_needed(seq.num_tokens) - len(hits)
        return num_new + num_hits_free <= self.num_free_blocks

    def allocate(self, seq: Sequence) -> None:
        """Gives `seq` blocks for all its tokens, reusing cached prefix blocks."""
        assert not seq.block_table, "allocate() on a sequence that holds blocks"
        hits = self._cached_prefix(seq)
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free[block_id]
            block.ref_count += 1
        seq.block_table = list(hits)
        for _ in range(self.blocks_needed(seq.num_tokens) - len(hits)):
            seq.block_table.append(self._take_free_block())
        if self.enable_prefix_caching:
            parent = self.blocks[hits[-1]].hash if hits else NO_HASH
            for i in range(len(hits), (seq.num_tokens - 1) // self.block_size):
                parent = chain_hash(parent, tuple(seq.token_ids[i * self.block_size : (i + 1) * self.block_size]))
                self.blocks[seq.block_table[i]].pending_hash = parent
                self.pending[parent] = self.pending.get(parent, 0) + 1
        seq.num_computed_tokens = seq.num_cached_tokens = len(hits) * self.block_size
        seq.num_hashed_blocks = len(hits)
        self.stats.num_queried_tokens += seq.num_tokens
        self.stats.num_hit_tokens += seq.num_cached_tokens

    def can_grow(self, seq: Sequence, num_tokens: int) -> bool:
        return self.blocks_needed(num_tokens) - len(seq.block_table) <= self.num_free_blocks

    def grow(self, seq: Sequence, num_tokens: int) -> None:
        """Makes room for `num_tokens` slots in `seq` (decode appends a block at a time)."""
        while len(seq.block_table) < self.blocks_needed(num_tokens):
            seq.block_table.append(self._take_free_block())

    def commit(self, seq: Sequence) -> None:
        """Hashes the blocks that became full and computed, so later requests find them."""
        if not self.enable_prefix_caching:
            return
        num_full = seq.num_computed_tokens // self.block_size
        start = seq.num_hashed_blocks
        parent = self.blocks[seq.block_table[start - 1]].hash if start else NO_HASH
        for i in range(start, num_full):
            block = self.blocks[seq.block_table[i]]
            if block.hash == NO_HASH:
                tokens = tuple(seq.token_ids[i * self.block_size : (i + 1) * self.block_size])
                block.hash, block.token_ids = chain_hash(parent, tokens), tokens
                self.hash_to_block.setdefault(block.hash, block.block_id)
                self._clear_pending(block)
            parent = block.hash
        seq.num_hashed_blocks = max(start, num_full)

    def free_sequence(self, seq: Sequence) -> None:
        # Freed in reverse so a prefix's tail is evicted before its head.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            self._clear_pending(block)
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                if block.hash == NO_HASH:  # nothing worth keeping: reuse it first
                    self.free.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.num_computed_tokens = seq.num_hashed_blocks = 0

    def reset_prefix_cache(self) -> bool:
        """Forgets every cached prefix; only when no sequence holds blocks (else False)."""
        if self.num_free_blocks != self.num_blocks:
            return False
        for block in self.blocks:
            block.hash, block.token_ids = NO_HASH, ()
        self.hash_to_block.clear()
        return True

    def _clear_pending(self, block: Block) -> None:
        if block.pending_hash != NO_HASH:
            count = self.pending[block.pending_hash] - 1
            if count:
                self.pending[block.pending_hash] = count
            else:
                del self.pending[block.pending_hash]
            block.pending_hash = NO_HASH

    def _take_free_block(self) -> int:
        block_id, _ = self.free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash != NO_HASH and self.hash_to_block.get(block.hash) == block_id:
            del self.hash_to_block[block.hash]
        block.hash, block.token_ids, block.ref_count = NO_HASH, (), 1
        return block_id
