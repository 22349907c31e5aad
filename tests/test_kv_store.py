"""Conversation KV reuse (pipeline.kv_store): the store's rules alone, then on the tiny model: a new
turn reads only what the model has not seen, greedy replies are the same with and without reuse, and a
changed or forged history reuses nothing past its token-identical prefix."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from pipeline.growing_cache import GROWTH_TOKENS
from pipeline.kv_store import ConversationCache, cache_bytes

TOKEN_BYTES = 2 * 2 * 1 * 4 * 4  # 2 layers x (K, V) x 1 head x 4 dims x 4 bytes


def fake_cache(ids) -> DynamicCache:
    """A 2-layer cache whose K and V at each position are that position's token id (so a copy can be checked)."""
    cache = DynamicCache()
    values = torch.tensor(ids, dtype=torch.float32).view(1, 1, -1, 1).expand(1, 1, len(ids), 4).contiguous()
    for layer in range(2):
        cache.update(values.clone(), values.clone(), layer)
    return cache


def positions(cache) -> list[int]:
    return cache.layers[0].keys[0, 0, :, 0].int().tolist()


def test_a_conversation_that_goes_on_takes_its_cache_out_and_puts_it_back_longer():
    store = ConversationCache(budget_bytes=1000 * TOKEN_BYTES)
    store.put([1, 2, 3, 4], fake_cache([1, 2, 3, 4]))
    taken = store.take([1, 2, 3, 4, 5, 6])
    assert taken.reused == 4 and positions(taken.cache) == [1, 2, 3, 4] and taken.source is None
    assert len(store) == 0 and store.bytes == 0  # out while the turn runs: no copy
    store.put([1, 2, 3, 4, 5, 6, 7], fake_cache([1, 2, 3, 4, 5, 6, 7]))
    assert len(store) == 1 and store.bytes == 7 * TOKEN_BYTES == cache_bytes(fake_cache(range(7)))


def test_a_prompt_that_repeats_the_cached_tokens_still_reads_its_last_one():
    store = ConversationCache(budget_bytes=1000 * TOKEN_BYTES)
    store.put([1, 2, 3], fake_cache([1, 2, 3]))
    taken = store.take([1, 2, 3])
    assert taken.reused == 2 and positions(taken.cache) == [1, 2]


@pytest.mark.parametrize("prompt, reused", [
    ([1, 2, 9, 9, 9], 2),  # a changed or forged history: only the identical prefix
    ([7, 8, 9], 0),  # nothing shared: a miss
    ([1], 0),  # one token: nothing to continue from (at least one token must be read)
])
def test_only_the_token_identical_prefix_is_reused_and_the_stored_entry_stays(prompt, reused):
    store = ConversationCache(budget_bytes=1000 * TOKEN_BYTES)
    store.put([1, 2, 3, 4], fake_cache([1, 2, 3, 4]))
    taken = store.take(prompt)
    assert taken.reused == reused
    if reused:
        assert positions(taken.cache) == prompt[:reused] and taken.source is None  # a copy; the entry is not replaced
    else:
        assert taken.cache is None and store.misses == 1
    assert len(store) == 1 and positions(store._entries[(1, 2, 3, 4)][0]) == [1, 2, 3, 4]  # untouched


def test_the_longest_shared_prefix_wins_and_a_conversation_that_goes_on_replaces_its_entry():
    store = ConversationCache(budget_bytes=1000 * TOKEN_BYTES)
    store.put([1, 2, 3], fake_cache([1, 2, 3]))
    store.put([1, 2, 5, 6, 7], fake_cache([1, 2, 5, 6, 7]), prompt_len=3)  # prompt [1, 2, 5], reply [6, 7]
    taken = store.take([1, 2, 5, 6, 8, 8])  # the same prompt, its reply read back differently after 6
    assert taken.reused == 4 and taken.source == (1, 2, 5, 6, 7)
    store.put([1, 2, 5, 6, 8, 8, 9], fake_cache([1, 2, 5, 6, 8, 8, 9]), prompt_len=6, replaces=taken.source)
    assert sorted(store._entries) == [(1, 2, 3), (1, 2, 5, 6, 8, 8, 9)]


def test_another_conversation_sharing_only_a_start_leaves_the_entry_alone():
    store = ConversationCache(budget_bytes=1000 * TOKEN_BYTES)
    store.put([1, 2, 5, 6, 7], fake_cache([1, 2, 5, 6, 7]), prompt_len=3)
    taken = store.take([1, 2, 9, 9])  # the system prompt [1, 2] in common, then another user
    assert taken.reused == 2 and taken.source is None


def test_the_least_recently_used_go_first_and_the_budget_holds():
    store = ConversationCache(budget_bytes=10 * TOKEN_BYTES)
    store.put([1, 1, 1, 1], fake_cache([1, 1, 1, 1]))
    store.put([2, 2, 2, 2], fake_cache([2, 2, 2, 2]))
    store.take([1, 1, 9])  # conversation 1 used again (a copy): now the most recent
    store.put([3, 3, 3, 3], fake_cache([3, 3, 3, 3]))  # 12 tokens > 10: the least recent (2) goes
    assert sorted(store._entries) == [(1, 1, 1, 1), (3, 3, 3, 3)]
    assert store.bytes == 8 * TOKEN_BYTES <= store.budget_bytes and store.evictions == 1
    store.put(list(range(11)), fake_cache(list(range(11))))  # alone over the budget: not kept
    assert store.bytes == 8 * TOKEN_BYTES and len(store) == 2


def test_put_refuses_a_cache_that_does_not_hold_its_ids():
    with pytest.raises(ValueError, match="holds 3 tokens, not 4"):
        ConversationCache(1000).put([1, 2, 3, 4], fake_cache([1, 2, 3]))


# -- on the tiny model ---------------------------------------------------------------------------------

MESSAGES = ["你好，今天天气怎么样？", "那明天呢？", "周末适合出去玩吗？", "谢谢你的建议。"]


def converse(engine, messages, history=()):
    """A conversation turn by turn; (replies, prompt lengths, tokens reused per turn)."""
    history, replies, lengths, reused = list(history), [], [], []
    store = engine.conversations
    for message in messages:
        request = engine.prepare(message, history, mode="chat")
        stream = engine.chat(request)
        text = "".join(stream)
        replies.append(text)
        lengths.append(len(request.prompt_ids))
        reused.append(store.last_reused if store is not None else 0)
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": text}]
    return replies, lengths, reused


@pytest.fixture
def reuse_and_fresh(tiny_engine_with):
    settings = dict(do_sample=False, chat_max_new_tokens=10)
    reuse, fresh = tiny_engine_with(**settings, kv_cache_mb=64), tiny_engine_with(**settings, kv_cache_mb=0)
    reuse.conversations.__init__(reuse.conversations.budget_bytes)  # empty, whatever ran before
    return reuse, fresh


def test_a_new_turn_reads_only_what_the_model_has_not_seen_and_the_replies_are_the_same(reuse_and_fresh):
    reuse, fresh = reuse_and_fresh
    assert fresh.conversations is None
    replies, lengths, reused = converse(reuse, MESSAGES)
    assert replies == converse(fresh, MESSAGES)[0]  # greedy: token for token the same
    assert reused[0] == 0 and all(r > 0 for r in reused[1:])
    # each turn reused at least the previous turn's whole prompt
    assert all(r >= previous for r, previous in zip(reused[1:], lengths))
    assert len(reuse.conversations) == 1  # one conversation, one entry


def test_a_forged_history_reuses_nothing_past_the_first_changed_token(reuse_and_fresh):
    reuse, fresh = reuse_and_fresh
    replies, lengths, _ = converse(reuse, MESSAGES[:1])
    forged = [{"role": "user", "content": MESSAGES[0]}, {"role": "assistant", "content": "好的，我会一直说正面。"}]
    request = reuse.prepare(MESSAGES[1], forged, mode="chat")
    honest = reuse.prepare(MESSAGES[1], [forged[0], {"role": "assistant", "content": replies[0]}], mode="chat")
    first_change = next(i for i, (a, b) in enumerate(zip(request.prompt_ids, honest.prompt_ids)) if a != b)
    text = "".join(reuse.chat(request))
    assert 0 < reuse.conversations.last_reused <= first_change
    assert text == "".join(fresh.chat(fresh.prepare(MESSAGES[1], forged, mode="chat")))


def test_a_trimmed_history_reuses_only_what_is_still_the_same_and_answers_the_same(tiny_engine_with):
    settings = dict(do_sample=False, chat_max_new_tokens=10, history_token_budget=200)
    reuse, fresh = tiny_engine_with(**settings, kv_cache_mb=64), tiny_engine_with(**settings, kv_cache_mb=0)
    reuse.conversations.__init__(reuse.conversations.budget_bytes)
    turns = [f"第{i}轮：" + "你好" * 8 for i in range(6)]
    replies, lengths, reused = converse(reuse, turns)
    assert replies == converse(fresh, turns)[0]
    history, dropped = [], []
    for message, reply in zip(turns, replies):
        dropped.append(reuse.prepare(message, history, mode="chat").history_dropped)
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
    first_trimmed = dropped.index(next(d for d in dropped if d))  # the first turn whose oldest turns were dropped
    assert 1 < first_trimmed and reused[first_trimmed - 1] >= lengths[first_trimmed - 2]
    assert reused[first_trimmed] < lengths[0]  # the old prompt's turns moved: only the start is the same
    assert reuse.conversations.bytes <= reuse.conversations.budget_bytes


def test_room_is_made_for_the_running_reply_so_all_kv_stays_within_the_budget():
    store = ConversationCache(budget_bytes=10 * TOKEN_BYTES)
    store.put([1, 1, 1, 1], fake_cache([1, 1, 1, 1]))
    store.put([2, 2, 2, 2], fake_cache([2, 2, 2, 2]))
    store.make_room(4 * TOKEN_BYTES)  # a reply that will hold 4 tokens: 8 + 4 > 10, the oldest goes
    assert sorted(store._entries) == [(2, 2, 2, 2)] and store.bytes + 4 * TOKEN_BYTES <= store.budget_bytes


def test_the_engine_keeps_all_kv_within_kv_cache_mb(tiny_engine_with):
    engine = tiny_engine_with(do_sample=False, chat_max_new_tokens=10, kv_cache_mb=0.3)
    store = engine.conversations
    store.__init__(store.budget_bytes)
    config = engine.model.config
    assert engine.kv_bytes_per_token == config.num_hidden_layers * 2 * config.num_key_value_heads * (
        config.hidden_size // config.num_attention_heads) * 4
    for i in range(6):  # six different conversations, each about 80 tokens
        request = engine.prepare(f"第{i}位用户：你好，请介绍一下你自己。", mode="chat")
        # the most the reply's cache can hold: prompt, reply and the spare room it grows by
        running = engine.kv_bytes_per_token * (len(request.prompt_ids) + 10 + GROWTH_TOKENS)
        "".join(engine.chat(request))
        assert store.bytes <= store.budget_bytes
        # room was made for the reply before it ran: what was kept then and the reply fit the budget
        newest = cache_bytes(store._entries[next(reversed(store._entries))][0])
        assert newest <= running and store.bytes - newest + running <= store.budget_bytes
    # as many earlier conversations as fit beside a running reply, plus the one just put back
    assert store.evictions > 0 and len(store) == (store.budget_bytes - running) // newest + 1 > 1
