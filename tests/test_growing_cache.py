"""The in-place KV cache (pipeline.growing_cache): the same keys and values as transformers' DynamicCache,
appended without copying the cache each token, and the same greedy replies and logits on the tiny model."""

from __future__ import annotations

import weakref

import pytest
import torch
from transformers import DynamicCache

import pipeline.engine as engine_module
from pipeline.growing_cache import GROWTH_TOKENS, GrowingCache, GrowingLayer, cache_bytes, release_freed_memory


def kv(step: int, tokens: int, heads: int = 2, dim: int = 4) -> torch.Tensor:
    """Keys (or values) for `tokens` new positions, each filled with a number that says which step wrote it."""
    return torch.arange(tokens, dtype=torch.float32).add(step * 1000).view(1, 1, tokens, 1).expand(1, heads, tokens, dim).clone()


def grow_both(appends: list[int]) -> tuple[GrowingCache, DynamicCache]:
    growing, dynamic = GrowingCache(), DynamicCache()
    for step, tokens in enumerate(appends):
        for layer in range(2):
            got = growing.update(kv(step, tokens), kv(step, tokens) + 0.5, layer)
            expected = dynamic.update(kv(step, tokens), kv(step, tokens) + 0.5, layer)
            assert all(torch.equal(g, e) for g, e in zip(got, expected))
    return growing, dynamic


def test_appends_hold_what_dynamic_cache_holds_and_reuse_the_room_until_it_is_full():
    growing, dynamic = grow_both([5])
    layer = growing.layers[0]
    assert isinstance(layer, GrowingLayer) and len(growing.layers) == 2
    room = layer._key_room.data_ptr()
    assert layer._key_room.shape[-2] == GROWTH_TOKENS  # 5 tokens held, room for 128
    for step in range(1, GROWTH_TOKENS - 5):  # one token at a time, as decoding appends
        for index in range(2):
            growing.update(kv(step, 1), kv(step, 1) + 0.5, index)
            dynamic.update(kv(step, 1), kv(step, 1) + 0.5, index)
        assert layer._key_room.data_ptr() == room  # written in place: no new allocation, no copy
    growing.update(kv(99, 2), kv(99, 2) + 0.5, 0)  # past the room: it grows by a chunk, keeping what it held
    dynamic.update(kv(99, 2), kv(99, 2) + 0.5, 0)
    assert layer._key_room.data_ptr() != room and layer._key_room.shape[-2] == 2 * GROWTH_TOKENS
    assert growing.get_seq_length() == dynamic.get_seq_length() == GROWTH_TOKENS + 1
    for g, d in zip(growing.layers, dynamic.layers):
        assert torch.equal(g.keys, d.keys) and torch.equal(g.values, d.values)


def test_a_cropped_cache_writes_over_the_cropped_tokens():
    growing, dynamic = grow_both([6, 1, 1])
    growing.crop(-3)
    dynamic.crop(-3)
    for step in (7, 8):
        for layer in range(2):
            growing.update(kv(step, 2), kv(step, 2) + 0.5, layer)
            dynamic.update(kv(step, 2), kv(step, 2) + 0.5, layer)
    assert growing.get_seq_length() == 9
    for g, d in zip(growing.layers, dynamic.layers):
        assert torch.equal(g.keys, d.keys) and torch.equal(g.values, d.values)


@pytest.mark.parametrize("batch", [1, 3])
def test_keys_replaced_from_outside_move_to_new_room_instead_of_being_overwritten(batch):
    growing, dynamic = grow_both([4])
    if batch > 1:  # batch_repeat_interleave replaces keys and values with batch-3 tensors
        growing.batch_repeat_interleave(batch)
        dynamic.batch_repeat_interleave(batch)
    for g, d in zip(growing.layers, dynamic.layers):  # new tensors of the same shape, as offloading makes
        g.keys, d.keys = g.keys + 100, d.keys + 100
    new = kv(1, 1).expand(batch, -1, -1, -1)
    for layer in range(2):
        growing.update(new, new + 0.5, layer)
        dynamic.update(new, new + 0.5, layer)
    for g, d in zip(growing.layers, dynamic.layers):
        assert g.keys.shape[0] == batch and torch.equal(g.keys, d.keys) and torch.equal(g.values, d.values)


def test_cache_bytes_counts_the_room_a_cache_keeps_not_only_the_tokens_it_holds():
    growing, dynamic = grow_both([5])
    per_token = cache_bytes(dynamic) // 5
    assert cache_bytes(dynamic) == 5 * per_token
    assert cache_bytes(growing) == GROWTH_TOKENS * per_token


def test_the_model_reads_and_decodes_the_same_with_either_cache(tiny_engine):
    """Logits bit for bit, over a prefill and 20 greedy steps, on the tiny model's packed layers."""
    model = tiny_engine.model
    prompt = torch.tensor([tiny_engine.prepare("今天天气很好，我们去公园散步吧。", mode="chat").prompt_ids])
    runs = []
    for cache in (DynamicCache(), GrowingCache()):
        with torch.inference_mode():
            out = model(input_ids=prompt, past_key_values=cache, use_cache=True)
            logits = [out.logits[0, -1].clone()]
            for _ in range(20):
                token = logits[-1].argmax().view(1, 1)
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                logits.append(out.logits[0, -1].clone())
        runs.append(logits)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_replies_use_the_growing_cache_and_are_the_replies_of_generate_with_dynamic_cache(tiny_engine_with):
    engine = tiny_engine_with(do_sample=False, kv_cache_mb=0)  # no store: each reply starts a new cache
    request = engine.prepare("请用三句话介绍一下你自己。", mode="chat")
    caches = []
    generate = engine.model.generate

    def recording_generate(*args, **kwargs):
        out = generate(*args, **kwargs)
        caches.append(out.past_key_values)
        return out

    engine.model.generate = recording_generate
    try:
        reply = "".join(engine.chat(request))
    finally:
        del engine.model.generate
    assert isinstance(caches[0], GrowingCache)
    with torch.inference_mode():
        plain = engine.model.generate(input_ids=torch.tensor([request.prompt_ids]), generation_config=engine.generation_config,
                                      past_key_values=DynamicCache())
    expected = engine.tokenizer.decode(plain.sequences[0, len(request.prompt_ids):], skip_special_tokens=True)
    assert reply and reply == expected


def test_after_a_reply_its_cache_is_freed_before_memory_is_given_back(tiny_engine_with, monkeypatch):
    engine = tiny_engine_with(do_sample=False, kv_cache_mb=0)  # no store: nothing should keep the cache
    caches, calls = [], []
    generate = engine.model.generate

    def recording_generate(*args, **kwargs):
        out = generate(*args, **kwargs)
        caches.append(weakref.ref(out.past_key_values))
        return out

    engine.model.generate = recording_generate
    monkeypatch.setattr(engine_module, "release_freed_memory", lambda: calls.append(caches[-1]() is None) or True)
    try:
        for text in ("你好", "今天天气怎么样？"):
            "".join(engine.chat(engine.prepare(text, mode="chat")))
    finally:
        del engine.model.generate
    assert calls == [True, True]  # once per reply, when its cache could no longer be reached


def test_release_freed_memory_runs_here():
    assert release_freed_memory() is True  # glibc (Linux): the product's images and this suite's machines
