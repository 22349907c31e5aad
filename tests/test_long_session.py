"""Long session (slow): 50 chat turns in one page session stay within the context budget, without
error, and resident memory after the warm-up grows less than 10% (tests/long_session.py measures).

    bash scripts/test.sh --slow
"""

from __future__ import annotations

import pytest

from tests.long_session import run_session

pytestmark = pytest.mark.slow


def test_fifty_turns_stay_within_the_budget_and_memory_stays_flat(tiny_engine):
    engine = tiny_engine
    result = run_session(engine, turns=50, warmup=5)
    print(f"\n[long session] prompt at most {result['max_prompt_tokens']} tokens, trimming from turn "
          f"{result['first_turn_dropping']}; RSS {result['rss_after_warmup_mb']:.1f} MB after warm-up, peak "
          f"{result['rss_peak_after_warmup_mb']:.1f} MB (x{result['rss_growth_ratio']:.4f})")
    assert result["errors"] == []
    rows = result["rows"]
    assert len(rows) == 50 and rows[-1]["history_messages"] > 0
    # The conversation outgrew the budget, and the engine kept every prompt inside it.
    assert result["first_turn_dropping"] is not None and result["first_turn_dropping"] < 50
    assert result["max_conversation_tokens"] <= result["history_token_budget"] + 8
    assert result["max_prompt_tokens"] + result["chat_max_new_tokens"] <= result["context_window"]
    assert result["rss_growth_ratio"] < 1.10
    assert engine.active_generations == 0
