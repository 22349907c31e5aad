"""Long session: N chat turns in one page session; prompt size against the budget and RSS per turn.

tests/test_long_session.py (slow) runs it. The turns go through the page's own callback (one Session, as one
browser tab), so the session's chat and history grow as they do for a user. After each turn: resident memory
(psutil RSS, after a gc), the prompt's tokens, how many old messages the engine dropped to stay within
HISTORY_TOKEN_BUDGET. The growth figure is the largest RSS after the warm-up turns over the RSS at the end
of the warm-up. (It was bench/long_session.py; its figures were never quoted, so it became the test's helper.)
"""

from __future__ import annotations

import gc
import time
from typing import Any

MESSAGES = ["你好，我们聊聊天吧。", "今天的天气怎么样？", "给我讲一个关于猫的故事。", "这家餐厅的菜太咸了，很失望。",
            "推荐一本好看的科幻小说。", "我刚跑完五公里，感觉很棒！", "怎么学好编程？", "周末去哪里玩比较好？"]


def rss_bytes() -> int:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss


def run_session(engine, turns: int = 50, warmup: int = 5) -> dict[str, Any]:
    """Chat `turns` times in one page session; per-turn figures and the RSS growth after warm-up."""
    from app.service import ModelService
    from app.ui.chat_tab import respond
    from app.ui.session import Session

    service, session = ModelService(engine, max_waiting=4), Session()
    budget = engine.settings.history_token_budget
    rows, errors = [], []
    for turn in range(turns):
        text = f"{MESSAGES[turn % len(MESSAGES)]}（第 {turn + 1} 轮）"
        prepared = engine.prepare(text, list(session.history), mode="chat", tags=False)
        prompt, dropped = prepared.prompt_ids, prepared.history_dropped
        started = time.perf_counter()
        try:
            for _ in respond(service, text, "both", session):
                pass
        except Exception as exc:  # noqa: BLE001 - recorded; the caller decides
            errors.append(f"turn {turn + 1}: {exc!r}")
        rows.append({"turn": turn + 1, "ms": round((time.perf_counter() - started) * 1000, 1),
                     "prompt_tokens": len(prompt), "history_messages": len(session.history),
                     "dropped_messages": dropped, "rss_mb": round(rss_bytes() / 2**20, 2)})
    after_warmup = rows[warmup - 1]["rss_mb"] if 0 < warmup <= len(rows) else rows[0]["rss_mb"]
    peak = max(r["rss_mb"] for r in rows[warmup:]) if len(rows) > warmup else after_warmup
    system = len(engine._chat_system_ids)
    return {
        "turns": turns, "warmup_turns": warmup, "errors": errors,
        "history_token_budget": budget, "context_window": engine.context_window,
        "chat_max_new_tokens": engine.settings.chat_max_new_tokens, "system_prompt_tokens": system,
        "max_prompt_tokens": max(r["prompt_tokens"] for r in rows),
        "max_conversation_tokens": max(r["prompt_tokens"] for r in rows) - system,
        "first_turn_dropping": next((r["turn"] for r in rows if r["dropped_messages"]), None),
        "rss_after_warmup_mb": after_warmup, "rss_peak_after_warmup_mb": peak,
        "rss_growth_ratio": round(peak / after_warmup, 4),
        "rows": rows,
    }
