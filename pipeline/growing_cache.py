"""A KV cache that appends each token in place, into room that grows a chunk at a time."""

from __future__ import annotations

import ctypes
import functools

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

# Tokens of spare room added when a layer's buffers fill: a regrow copies the layer once, so at this
# size the copies cost under 1% of what torch.cat per token did, and the room no token uses yet stays
# under this many tokens' KV (128 x 196 KB = 25 MB for Qwen1.5-0.5B, which has no grouped-query attention).
GROWTH_TOKENS = 128


class GrowingLayer(DynamicLayer):
    """A DynamicLayer that writes new keys and values into spare room instead of concatenating.

    transformers' DynamicLayer copies the layer's whole cache with torch.cat for every new token: with
    Qwen1.5-0.5B's 196 KB of FP32 KV per token that is about 200 MB copied (and as much freshly allocated
    and page-faulted) per decoded token at a 1,000-token context. Here `keys` and `values` are views of
    the first tokens of larger buffers, so every other DynamicLayer method (crop included) works on
    them unchanged; anything that replaces them with other tensors just moves them to new room at the
    next update. The values are the same as DynamicLayer's, bit for bit.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_room: torch.Tensor | None = None
        self._value_room: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new keys and values (batch, heads, tokens, head_dim); returns all keys and values held."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held = self.get_seq_length()
        needed = held + key_states.shape[-2]
        if not self._fits(key_states, value_states, needed):
            self._regrow(key_states, value_states, held, needed)
        self._key_room[..., held:needed, :].copy_(key_states)
        self._value_room[..., held:needed, :].copy_(value_states)
        self.keys = self._key_room[..., :needed, :]
        self.values = self._value_room[..., :needed, :]
        return self.keys, self.values

    def _fits(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> bool:
        """Whether the held keys and values are still views of the room, and needed tokens fit in it."""
        room = self._key_room
        return (room is not None and needed <= room.shape[-2]
                and room.shape[:2] == key_states.shape[:2] and room.shape[-1] == key_states.shape[-1]
                and self._value_room.shape[-1] == value_states.shape[-1]
                and (needed == key_states.shape[-2] or self._held_in_room()))  # nothing held yet, or in the room

    def _held_in_room(self) -> bool:
        """Whether keys and values are still views of the room (not tensors put there from outside)."""
        return (self._key_room is not None and self.keys.data_ptr() == self._key_room.data_ptr()
                and self.values.data_ptr() == self._value_room.data_ptr())

    def _regrow(self, key_states: torch.Tensor, value_states: torch.Tensor, held: int, needed: int) -> None:
        capacity = (needed // GROWTH_TOKENS + 1) * GROWTH_TOKENS
        batch, heads, _, key_dim = key_states.shape
        key_room = key_states.new_empty((batch, heads, capacity, key_dim))
        value_room = value_states.new_empty((batch, heads, capacity, value_states.shape[-1]))
        if held:
            key_room[..., :held, :].copy_(self.keys)
            value_room[..., :held, :].copy_(self.values)
        self._key_room, self._value_room = key_room, value_room

    def bytes_held(self) -> int:
        """Bytes this layer keeps allocated: its room, spare tokens included."""
        if not self.is_initialized:
            return 0
        room = 0 if self._key_room is None else self._key_room.nbytes + self._value_room.nbytes
        if self._held_in_room():
            return room
        return room + self.keys.nbytes + self.values.nbytes  # replaced by other tensors since


class GrowingCache(DynamicCache):
    """A DynamicCache made of GrowingLayers (one per decoder layer, added as the model first writes it)."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)


def cache_bytes(cache: Cache) -> int:
    """Bytes a cache keeps allocated for its keys and values."""
    total = 0
    for layer in cache.layers:
        if isinstance(layer, GrowingLayer):
            total += layer.bytes_held()
        elif layer.is_initialized:
            total += layer.keys.nbytes + layer.values.nbytes
    return total


def release_freed_memory() -> bool:
    """Hand the memory this process has freed back to the OS (glibc's malloc_trim); whether it could.

    A reply's KV room is hundreds of MB at a long history, and glibc serves it from the heap once a
    prefill's large activations have raised its mmap threshold; freed in the middle of the heap, it
    stays resident and adds up with the next request's. Measured on Qwen1.5-0.5B's shape after a
    2,048-token conversation: 0.36-0.66 GiB kept without this, none with it.
    """
    trim = _malloc_trim()
    return bool(trim and trim(0) >= 0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only: not on musl or macOS
    except (AttributeError, OSError):
        return None
