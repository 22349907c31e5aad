"""Recent conversations' KV caches, found again by token prefix, within a memory budget.

The page, /chat and /api/infer all send the whole history with each turn, so a turn's prompt starts
with the previous turn's prompt and reply. Whatever the model has already read is looked up here by
its token ids, never by a session id: a changed or forged history shares only its token-identical
prefix, and the KV of identical tokens after an identical prefix is the same KV.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from transformers import DynamicCache

from .growing_cache import GrowingCache, cache_bytes


@dataclass
class Taken:
    """A cache to continue from (None: start afresh), how many of the prompt's tokens it holds, and the
    stored entry it was copied from when this prompt continues that entry's conversation (the whole
    earlier prompt matched; its reply was read back differently): put() replaces that entry."""

    cache: DynamicCache | None
    reused: int
    source: tuple[int, ...] | None = None


class ConversationCache:
    """KV caches keyed by the token ids they hold, least recently used evicted beyond budget_bytes.

    The budget covers the running reply's cache too (make_room before it starts), so all KV memory
    stays within it.
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        # ids -> (cache, bytes, how many of the ids were the prompt: the rest is the reply generated)
        self._entries: OrderedDict[tuple[int, ...], tuple[DynamicCache, int, int]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0
        self.last_reused = 0  # prompt tokens the last take() found already read

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, prompt_ids: Sequence[int]) -> Taken:
        """The stored cache sharing the longest prefix with prompt_ids, cut to that prefix (at least one
        prompt token is left to read). A conversation that goes on is taken out of the store (it comes
        back longer with put); a shorter shared prefix is copied, and its entry stays."""
        best, common = None, 0
        for ids in self._entries:
            n = _common_prefix(ids, prompt_ids)
            if n > common:
                best, common = ids, n
        usable = min(common, len(prompt_ids) - 1)
        self.last_reused = max(usable, 0) if best is not None else 0
        if best is None or usable <= 0:
            self.misses += 1
            return Taken(None, 0)
        self.hits += 1
        cache, size, prompt_len = self._entries[best]
        if common == len(best):  # the whole entry: the conversation goes on (or repeats its last prompt)
            del self._entries[best]
            self.bytes -= size
            if usable < len(best):
                cache.crop(-(len(best) - usable))
            return Taken(cache, usable)
        self._entries.move_to_end(best)
        # Another conversation sharing only a start (the system prompt) leaves this one's entry alone.
        return Taken(_copy_prefix(cache, usable), usable, source=best if common >= prompt_len else None)

    def make_room(self, running_bytes: int) -> None:
        """Evict the least recently used until the kept caches and a running one of running_bytes fit the budget."""
        while self._entries and self.bytes + running_bytes > self.budget_bytes:
            _, (_, evicted, _) = self._entries.popitem(last=False)
            self.bytes -= evicted
            self.evictions += 1

    def put(self, ids: Sequence[int], cache: DynamicCache, prompt_len: int | None = None,
            replaces: tuple[int, ...] | None = None) -> None:
        """Keep cache, which holds the KV of ids (the first prompt_len of them the prompt, by default all),
        instead of the entry it replaces (if any); the least recently used go while over budget."""
        if replaces is not None and replaces in self._entries:
            self.bytes -= self._entries.pop(replaces)[1]
        ids = tuple(ids)
        if cache.get_seq_length() != len(ids):
            raise ValueError(f"the cache holds {cache.get_seq_length()} tokens, not {len(ids)}")
        size = cache_bytes(cache)
        if size > self.budget_bytes:
            return
        if ids in self._entries:
            self.bytes -= self._entries.pop(ids)[1]
        self.make_room(size)
        self._entries[ids] = (cache, size, len(ids) if prompt_len is None else prompt_len)
        self.bytes += size


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens a and b share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _copy_prefix(cache: DynamicCache, length: int) -> DynamicCache:
    copy = GrowingCache()
    for i, layer in enumerate(cache.layers):
        copy.update(layer.keys[..., :length, :].clone(), layer.values[..., :length, :].clone(), i)
    return copy
