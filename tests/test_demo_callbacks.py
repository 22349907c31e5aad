"""The page's callbacks against the fake engine: one event per message (label, then streamed reply),
Stop, Clear, sessions, ordering between messages, errors, and the named API."""

from __future__ import annotations

import html
import os
import re
import threading
import time

import gradio as gr
import httpx
import pytest
from gradio_client import Client

import demo
from app.gate import Job
from app.service import ModelService
from app.gradio_api import chat_api, sentiment_api
from app.ui import render
from app.ui.chat_tab import clear_session, respond, shown, stop_turns
from app.ui.render import CHAT_ONLY_SENTIMENT, IDLE_SENTIMENT
from app.ui.session import Session
from pipeline import LABELS, Mode
from pipeline.messages import REFUSALS
from tests.fakes import FakeEngine
from tests.served import Consumer, collect, event_id, hold_model, serve, wait_until

NO_CHANGE = type(gr.skip())


def service_for(engine, max_waiting: int = 4) -> ModelService:
    return ModelService(engine, max_waiting)


def send(service, session, text, mode="both") -> list[tuple]:
    """Every update the page's event yields for one message, run to its end."""
    return list(respond(service, text, mode, session))


def verdict(box: str) -> str:
    """The headline of the sentiment box's HTML: the label, or the status line before it comes."""
    return html.unescape(re.search(r'<div class="verdict[^"]*">(.*?)</div>', box).group(1))


def shown_labels(updates) -> list[str]:
    """What the sentiment box's headline showed, in order (updates that left it alone skipped)."""
    return [verdict(u.sentiment) for u in updates if not isinstance(u.sentiment, NO_CHANGE)]


def chats(updates) -> list[list[dict]]:
    return [u.chat for u in updates if not isinstance(u.chat, NO_CHANGE)]


def chat_calls(engine):
    return [args for name, args in engine.calls if name == "chat"]


@pytest.mark.parametrize("text, shown", [
    ("今天很开心", "😄 正面 90%"), ("太差了", "😞 负面 90%"), ("还行吧，有点差", "😐 偏负面 58%"), ("一般，挺好", "😐 偏正面 58%"),
])
def test_the_label_says_when_it_is_too_close_to_call(text, shown):
    session = Session()
    updates = send(service_for(FakeEngine()), session, text, "emotion")
    assert shown_labels(updates)[-1] == shown and shown in session.display[-1]["content"]


def test_every_update_of_a_sentiment_only_message_keeps_the_whole_chat():
    # Gradio blanks an output that an event leaves unset; the whole chat once disappeared after a
    # sentiment-only message. Every update here carries the full conversation.
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    send(service, session, "你好")
    updates = send(service, session, "物流很快", "emotion")
    assert updates and all(len(chat) == 4 for chat in chats(updates))
    assert session.display[2]["content"] == "物流很快" and "正面" in session.display[3]["content"]


def test_send_shows_the_message_and_clears_the_input_before_any_model_work():
    engine, session = FakeEngine(), Session()
    first = next(respond(service_for(engine), "今天很开心", "both", session))
    assert first.textbox == "" and first.notice == ""
    assert first.chat == [{"role": "user", "content": "今天很开心"}, {"role": "assistant", "content": "…"}]
    assert verdict(first.sentiment) == "…" and "「今天很开心」" in first.sentiment  # it names its message
    assert first.stop["interactive"] is True  # Stop works while something runs
    assert engine.calls == []


def test_the_label_comes_first_then_the_reply():
    engine, session = FakeEngine(reply_pieces=["好", "的"]), Session()
    steps = respond(service_for(engine), "今天很开心", "both", session)
    next(steps)
    labelled = next(steps)
    assert verdict(labelled.sentiment) == "😄 正面 90%" and "情感" in labelled.timing
    assert 'style="width:90.0%;background:#30a46c"' in labelled.sentiment  # the bar: 正面 90%
    assert [name for name, _ in engine.calls] == ["classify"]  # no chat yet
    assert "😄 正面 90%" in labelled.chat[-1]["content"]
    updates = list(steps)
    assert [name for name, _ in engine.calls] == ["classify", "chat"]
    final = updates[-1]
    assert final.chat[-1]["content"].startswith("好的")
    assert "回复" in final.timing and "（2 字" in final.timing  # characters, not tokens
    assert final.stop["interactive"] is False  # nothing runs any more


def test_the_reply_streams_piece_by_piece():
    engine, session = FakeEngine(reply_pieces=["你", "好", "！"]), Session()
    contents = [chat[-1]["content"] for chat in chats(send(service_for(engine), session, "你好"))]
    streamed = [c for c in contents if "▌" in c]
    assert [c.split(" ▌")[0] for c in streamed] == ["你", "你好", "你好！"]
    assert contents[-1].startswith("你好！\n\n*⏱") and "▌" not in contents[-1]
    assert session.history == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]


def test_stop_ends_generation_in_the_engine_and_keeps_the_partial_reply():
    gate = threading.Event()
    engine, session = FakeEngine(reply_pieces=["一", "二", "三"], gate=gate), Session()
    service = service_for(engine)
    consumer = Consumer(respond(service, "数一数", "both", session))
    consumer.start()
    wait_until(lambda: engine.active_generations == 1 and "一" in session.display[-1]["content"],
               what="the first streamed piece")
    assert service.gate.busy

    chat, stop = stop_turns(session)

    consumer.join(10)
    assert consumer.error is None and stop["interactive"] is False
    assert engine.generations_cancelled == 1 and engine.active_generations == 0
    assert not service.gate.busy and service.gate.waiting == 0  # the model is free for the next job
    assert chat[-1]["content"].startswith("一（已停止）")
    assert session.history[-1] == {"role": "assistant", "content": "一"}


def test_stop_while_waiting_for_the_model_leaves_the_line_and_runs_nothing():
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    others = [hold_model(service.gate), hold_model(service.gate, quick=True)]  # a reply and a label run
    consumer = Consumer(respond(service, "你好", "both", session))
    consumer.start()
    wait_until(lambda: service.gate.ahead_of(session.turns[0].job) == 1 if session.turns else False,
               what="the message to wait for the model")
    chat, _ = stop_turns(session)
    consumer.join(10)
    assert consumer.error is None and engine.calls == []
    assert service.gate.waiting == 0 and service.gate.busy  # only the other jobs are left
    assert chat[-1]["content"] == "（已停止）"
    for other in others:
        other.cancel()
    assert not service.gate.busy


def test_stop_after_the_label_keeps_it_and_marks_the_reply_stopped():
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    steps = respond(service, "今天很开心", "both", session)
    next(steps), next(steps)  # shown, then labelled
    other = hold_model(service.gate)  # the reply now waits
    consumer = Consumer(steps)
    consumer.start()
    wait_until(lambda: service.gate.ahead_of(session.turns[0].job) == 1, what="the reply to wait")
    chat, _ = stop_turns(session)
    consumer.join(10)
    assert chat[-1]["content"].startswith("（已停止）") and "😄 正面 90%" in chat[-1]["content"]
    assert chat_calls(engine) == [] and session.history == []
    other.cancel()


def test_clear_stops_the_reply_and_empties_the_conversation():
    gate = threading.Event()
    engine, session = FakeEngine(gate=gate), Session()
    service = service_for(engine)
    gate.set()
    send(service, session, "第一句")
    gate.clear()
    consumer = Consumer(respond(service, "第二句", "both", session))
    consumer.start()
    wait_until(lambda: engine.active_generations == 1, what="the second reply to start")

    chat, box, timing, textbox, notice, stop = clear_session(session)
    assert (chat, box, timing, textbox, notice, stop["interactive"]) == ([], IDLE_SENTIMENT, "", "", "", False)

    consumer.join(10)
    assert engine.generations_cancelled == 1 and engine.active_generations == 0
    assert session.display == [] and session.history == [] and session.turns == []
    gate.set()
    send(service, session, "重新开始")
    assert chat_calls(engine)[-1] == ([], "重新开始")  # the old conversation is gone for the model too
    assert [m["content"].split("\n")[0] for m in session.display] == ["重新开始", "回复：重新开始"]


def test_each_session_has_its_own_history():
    engine = FakeEngine()
    service = service_for(engine)
    alice, bob = Session(), Session()
    send(service, alice, "我是小明")
    send(service, bob, "我是小红")
    send(service, alice, "我是谁？")
    history, message = chat_calls(engine)[-1]
    assert message == "我是谁？"
    assert [m["content"] for m in history] == ["我是小明", "回复：我是小明"]
    assert [m["content"] for m in bob.history] == ["我是小红", "回复：我是小红"]


@pytest.mark.parametrize("text, mode, calls, shown, later_histories", [
    ("第二句很差", "both", ["classify", "chat", "classify", "chat"],
     ["第一句", "回复：第一句", "第二句很差", "回复：第二句很差"], [[{"role": "user", "content": "第一句"}, {"role": "assistant", "content": "回复：第一句"}]]),
    # Issue 13's lost conversation: a sentiment-only message sent mid-reply emptied the chat when the reply ended.
    ("物流很快，五星好评！", "emotion", ["classify", "chat", "classify"],
     ["第一句", "回复：第一句", "物流很快，五星好评！", "😄 正面 90%"], []),
])
def test_a_message_sent_while_a_reply_streams_is_answered_and_nothing_is_lost(text, mode, calls, shown, later_histories):
    gate = threading.Event()
    engine, session = FakeEngine(gate=gate), Session()
    service = service_for(engine)
    first = Consumer(respond(service, "第一句", "both", session))
    first.start()
    wait_until(lambda: engine.active_generations == 1, what="the first reply to stream")
    second = Consumer(respond(service, text, mode, session))
    second.start()
    wait_until(lambda: len(session.display) == 4, what="the second message to show")
    gate.set()
    first.join(10), second.join(10)
    assert first.error is None and second.error is None
    assert [name for name, _ in engine.calls] == calls
    assert [m["content"].split("\n")[0] for m in session.display] == shown
    assert [len(chats(c.updates)[-1]) for c in (first, second)] == [4, 4]  # every last update shows it all
    assert [history for history, _ in chat_calls(engine)[1:]] == later_histories  # a reply sees the replies before it


@pytest.mark.parametrize("mode, text, roles, label, answer", [
    ("emotion", "这家店太差了", ["classify"], "😞 负面 90%", "😞 负面 90%"),
    ("chat", "这家店太差了", ["chat"], CHAT_ONLY_SENTIMENT, "回复：这家店太差了"),
    ("both", "#EMOTION# 这家店太差了", ["classify"], "😞 负面 90%", "😞 负面 90%"),
    ("both", "#CHAT# 这家店太差了", ["chat"], CHAT_ONLY_SENTIMENT, "回复：这家店太差了"),
    ("emotion", "#chat# 这家店太差了", ["chat"], CHAT_ONLY_SENTIMENT, "回复：这家店太差了"),
    ("chat", "＃ＥＭＯＴＩＯＮ＃ 这家店太差了", ["classify"], "😞 负面 90%", "😞 负面 90%"),  # a Chinese IME's tag
    ("both", "  ＃CHAT＃这家店太差了", ["chat"], CHAT_ONLY_SENTIMENT, "回复：这家店太差了"),  # leading spaces
])
def test_the_mode_switch_and_typed_tags_pick_the_roles(mode, text, roles, label, answer):
    engine, session = FakeEngine(), Session()
    updates = send(service_for(engine), session, text, mode)
    assert [name for name, _ in engine.calls] == roles
    assert shown_labels(updates)[-1] == label
    assert session.display[-1]["content"].startswith(answer)
    assert session.display[0]["content"] == "这家店太差了"  # the tag is not shown as part of the text


@pytest.mark.parametrize("text, notice", [
    ("", "请先输入内容再发送"),
    ("   ", "请先输入内容再发送"),
    ("#EMOTION#", "请先输入内容再发送"),
    ("长" * 1001, "内容过长：约 1001 字，上限约 1000 字，请删减后再发"),
    ("长" * 20000, "内容过长：约 20000 字，上限约 1000 字，请删减后再发"),  # the counter's limit, as for any text past it
    (None, "内容必须是文字"),
])
def test_bad_input_is_a_chinese_notice_and_the_chat_and_the_input_stay(text, notice):
    engine, session = FakeEngine(max_input_chars=1000), Session()
    service = service_for(engine)
    send(service, session, "第一句")
    updates = send(service, session, text)
    assert updates == [shown(notice=f"⚠️ {notice}")]  # nothing else changes: the chat, the input
    assert len(session.display) == 2 and session.turns == [] and len(engine.calls) == 2


def test_a_good_message_clears_the_notice_of_a_bad_one():
    session, service = Session(), service_for(FakeEngine())
    assert send(service, session, " ")[0].notice.startswith("⚠️")
    assert send(service, session, "你好")[0].notice == ""


def test_a_full_line_is_refused_before_the_message_leaves_the_input():
    engine, session = FakeEngine(), Session()
    service = service_for(engine, max_waiting=1)
    other, waiting = hold_model(service.gate), Job()
    service.gate.admit(waiting)
    assert send(service, session, "你好") == [shown(notice=f"⚠️ {REFUSALS['busy'].zh}")]
    assert session.display == [] and engine.calls == [] and service.gate.waiting == 1
    other.cancel(), waiting.cancel()


def test_an_engine_failure_ends_the_turn_in_its_place_and_frees_the_model():
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    send(service, session, "第一句")

    def broken(request, max_new_tokens=None):
        raise RuntimeError("out of memory")

    engine.chat, chat = broken, engine.chat
    updates = send(service, session, "你好")
    assert updates[-1].notice.startswith("⚠️ 出错了")
    assert session.turns == [] and not service.gate.busy and service.gate.waiting == 0
    assert [m["content"].split("\n")[0] for m in session.display] == ["第一句", "回复：第一句", "你好", "⚠️ 出错了：模型没能回答这条消息，请再试一次"]
    engine.chat = chat
    send(service, session, "#EMOTION# 很好")  # and the page still serves
    assert "正面" in session.display[-1]["content"]


def test_the_page_says_when_the_model_is_still_loading():
    assert send(ModelService(None, 4), Session(), "你好") == [shown(notice="⚠️ 模型还在加载，请稍等片刻再试")]


def test_a_waiting_message_says_how_many_come_first_then_that_the_model_answers_someone_else():
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    reply, label = hold_model(service.gate), hold_model(service.gate, quick=True)
    steps = respond(service, "你好", "chat", session)
    assert next(steps).chat[-1]["content"] == "…"  # shown at once, before it asks for the model
    assert next(steps).chat[-1]["content"] == "排队中，前面还有 2 条"
    label.cancel()
    assert next(steps).chat[-1]["content"] == "模型正在回复其他消息，马上轮到你…"
    reply.cancel()
    assert list(steps)[-1].chat[-1]["content"].startswith("回复：你好")


def test_a_label_in_line_says_so_in_the_sentiment_box():
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    running_label = hold_model(service.gate, quick=True)
    steps = respond(service, "很好", "emotion", session)
    next(steps)
    assert verdict(next(steps).sentiment) == "排队中，前面还有 1 条"
    running_label.cancel()
    assert shown_labels(list(steps)) == ["😄 正面 90%"]


def test_a_newer_messages_label_stays_while_an_older_reply_still_streams():
    gate = threading.Event()
    engine, session = FakeEngine(gate=gate, reply_pieces=["一", "二", "三"]), Session()
    service = service_for(engine)
    older = Consumer(respond(service, "第一句", "both", session))
    older.start()
    wait_until(lambda: "一 ▌" in session.display[-1]["content"], what="the older reply to stream")
    newer = send(service, session, "物流很快", "emotion")  # its label comes between the older reply's tokens
    boxes = [u.sentiment for u in newer if not isinstance(u.sentiment, NO_CHANGE)]
    assert verdict(boxes[-1]) == "😄 正面 90%" and "「物流很快」" in boxes[-1]
    streamed_before = len(older.updates)
    gate.set()
    older.join(10)
    assert len(older.updates) > streamed_before  # the older reply went on updating the page...
    assert all(isinstance(u.sentiment, NO_CHANGE) for u in older.updates[streamed_before:])  # ...but not the box


def test_a_chat_only_message_that_waited_keeps_chat_only_in_the_box():
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    other = hold_model(service.gate)
    steps = respond(service, "你好", "chat", session)
    assert verdict(next(steps).sentiment) == CHAT_ONLY_SENTIMENT
    waiting = next(steps)
    assert waiting.chat[-1]["content"] == "模型正在回复其他消息，马上轮到你…"  # the bubble says it waits
    assert isinstance(waiting.sentiment, NO_CHANGE)  # the box has nothing to wait for
    other.cancel()
    updates = list(steps)
    assert shown_labels(updates) == []  # the box never left "chat only"
    assert session.display[-1]["content"].startswith("回复：你好")


def test_a_reply_that_loops_is_marked_as_cut_short():
    engine, session = FakeEngine(reply_pieces=["好的"], finish_reason="loop"), Session()
    send(service_for(engine), session, "你好", "chat")
    assert session.display[-1]["content"].startswith("好的（回复开始重复同一句话，已截断）")


def test_html_typed_by_the_user_is_shown_as_text():
    assert render.as_text_markdown("<b>粗体</b> & **强调**") == "&lt;b&gt;粗体&lt;/b&gt; &amp; **强调**"
    assert render.as_text_markdown("看 `<i>` 和\n```html\n<p>x</p>\n```") == "看 `<i>` 和\n```html\n<p>x</p>\n```"
    assert render.as_text_markdown("流式 ```\n<p>未闭合") == "流式 ```\n<p>未闭合"
    engine, session = FakeEngine(reply_pieces=["<script>alert(1)</script>"]), Session()
    send(service_for(engine), session, "<img src=x onerror=alert(1)>")
    assert session.display[0]["content"] == "&lt;img src=x onerror=alert(1)&gt;"
    assert session.display[1]["content"].startswith("&lt;script&gt;")


def test_the_named_api_functions():
    engine = FakeEngine(reply_pieces=["a", "b"])
    service = service_for(engine)
    assert collect(_once(sentiment_api(service, "太差了"))) == [{
        "label": LABELS[1], "confidence": 0.9, "uncertain": False, "inference_time_ms": 1.5}]
    assert collect(_once(sentiment_api(service, "还行，就是有点差"))) == [{
        "label": LABELS[1], "confidence": 0.58, "uncertain": True, "inference_time_ms": 1.5}]
    assert collect(_once(sentiment_api(service, "#CHAT# 太差了")))[0]["label"] == LABELS[1]  # a review, not a command
    assert collect(chat_api(service, "hi", [{"role": "user", "content": "x"}])) == ["a", "ab"]
    with pytest.raises(gr.Error, match="empty"):
        collect(_once(sentiment_api(service, " ")))
    with pytest.raises(gr.Error, match="role"):
        collect(chat_api(service, "hi", [{"role": "system", "content": "x"}]))
    assert not service.gate.busy and service.gate.waiting == 0 and engine.active_generations == 0
    assert [name for name, _ in engine.calls].count("chat") == 1  # the bad history never reached the model


async def _once(coroutine):
    yield await coroutine


def test_the_named_chat_api_answers_an_empty_reply_with_empty_text():
    assert collect(chat_api(service_for(FakeEngine(reply_pieces=[])), "hi")) == [""]


def _join(url: str, api_name: str, data: list) -> None:
    """One page event through Gradio's queue, as the browser sends it; returns when it has completed."""
    session = f"{api_name}-{time.monotonic_ns()}"
    with httpx.Client(timeout=60) as client:
        client.post(f"{url}/gradio_api/queue/join", json={"data": data, "fn_index": event_id(url, api_name),
                                                          "session_hash": session}).raise_for_status()
        with client.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as stream:
            next(line for line in stream.iter_lines() if "process_completed" in line)


def test_gradio_starts_every_event_at_once_and_the_gate_is_the_one_line():
    """Page sends, a batch and the named API all reach the gate at once: Gradio holds none of them back."""
    with serve(FakeEngine(), queue_max_size=8) as app:
        url, gate = app.local_url.rstrip("/"), app.service.gate
        held = hold_model(gate, quick=True)  # a label holds the model: every other turn waits
        events = [("on_send", ["你好", "chat", None]), ("on_send", ["很好", "emotion", None]),
                  ("on_start", [None, True, None, "很好\n太差", None])]
        threads = [threading.Thread(target=_join, args=(url, name, data), daemon=True) for name, data in events]
        client = Client(app.local_url, verbose=False)
        for thread in threads:
            thread.start()
        jobs = [client.submit("你好", [], api_name="/chat"), client.submit("很好", api_name="/sentiment"),
                client.submit(["很好"], api_name="/classify_many")]
        wait_until(lambda: gate.waiting == 6, what="all six events waiting in the gate at once")
        held.cancel()
        for thread in threads:
            thread.join(30)
        assert [job.result(timeout=30) is not None for job in jobs] == [True] * 3
        assert not any(thread.is_alive() for thread in threads)
        assert set(app.demo.get_api_info()["named_endpoints"]) == {"/sentiment", "/chat", "/classify_many"}
        assert app.demo.analytics_enabled is False
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"  # set by importing app, before gradio


def test_mode_values_match_the_engine():
    assert {value for _, value in demo.MODES} == {m.value for m in Mode}


# -- no turn is lost, whatever the order of sends, mode switches, Stop, Clear and refusals ------------------

SCRIPTS = {
    "mode switches mid-reply": [("send", "第一句", "both"), ("send", "物流很快", "emotion"), ("send", "你好", "chat"),
                                ("release",)],
    "refusals between sends": [("send", "第一句", "both"), ("refused", ""), ("send", "包装破了", "emotion"),
                               ("refused", "长" * 2000), ("send", "第三句", "chat"), ("release",)],
    "stop mid-reply, then more": [("send", "第一句", "both"), ("stop",), ("send", "很好", "emotion"),
                                  ("send", "第二句", "both"), ("stop",), ("stop",), ("release",), ("send", "第三句", "chat")],
    "clear mid-reply, then more": [("send", "第一句", "both"), ("send", "第二句", "both"), ("clear",),
                                   ("send", "很差", "emotion"), ("send", "第三句", "chat"), ("release",)],
    "stop while a message waits behind the tab's reply": [("send", "第一句", "chat"), ("send", "第二句", "chat"),
                                                          ("stop",), ("send", "第三句", "both"), ("release",)],
}


@pytest.mark.parametrize("script", SCRIPTS.values(), ids=SCRIPTS.keys())
def test_the_chat_always_shows_every_message_since_the_last_clear(script):
    gate = threading.Event()
    engine, session = FakeEngine(gate=gate, reply_pieces=["一", "二"]), Session()
    service = service_for(engine)
    consumers, shown = [], []  # shown: the messages the chat must hold, in order
    for action, *args in script:
        if action == "send":
            text, mode = args
            consumers.append(Consumer(respond(service, text, mode, session)))
            consumers[-1].start()
            shown.append(text)
            wait_until(lambda: [m["content"] for m in session.display[::2]] == shown, what=f"{text} shown")  # noqa: B023 - waited on in this iteration
        elif action == "refused":
            assert [u.notice[:2] for u in send(service, session, args[0])] == ["⚠️"]
        elif action == "stop":
            stop_turns(session)
        elif action == "clear":
            clear_session(session)
            shown = []
        elif action == "release":
            gate.set()
    for consumer in consumers:
        consumer.join(10)
        assert consumer.error is None and not consumer.is_alive()
    assert [m["content"] for m in session.display[::2]] == shown
    assert [m["role"] for m in session.display] == ["user", "assistant"] * len(shown)
    answers = [m["content"] for m in session.display[1::2]]
    assert all(a and a != "…" and "▌" not in a and "排队" not in a and "等上一条" not in a for a in answers), answers
    last = [c.updates[-1].chat for c in consumers if c.updates and not isinstance(c.updates[-1].chat, NO_CHANGE)]
    assert session.display in last  # the page's last word on the chat is the whole conversation
    kept = [m["content"] for m in session.history if m["role"] == "user"]
    assert kept == [t for t, a in zip(shown, answers) if not a.startswith(("（已停止）", "😄", "😞", "😐"))]


def test_a_tab_s_chat_updates_reach_the_page_in_the_order_they_were_copied():
    """Two Sends of one tab: while one's update waits to be sent (its generator not yet resumed), the other
    cannot copy the chat, so an older copy is never sent after a newer one (a reply's end overwritten)."""
    service, session = service_for(FakeEngine()), Session()
    first = respond(service, "第一句", "emotion", session)
    next(first)  # its update is with Gradio: the generator is not resumed until it has been sent
    copied = threading.Event()
    second = threading.Thread(target=lambda: (next(respond(service, "第二句", "emotion", session)), copied.set()),
                              daemon=True)
    second.start()
    assert not copied.wait(0.3), "the second Send copied the chat while the first one's update was unsent"
    for _ in first:  # resumed: the second one may copy now
        break
    assert copied.wait(5)


def test_the_place_in_line_shown_never_goes_up():
    """Issue 28 item 5: a count higher than one already shown is told without a number."""
    from app.service import Answer
    from app.ui.chat_tab import Queue

    line = Queue()
    shown_texts = [render.waiting_text(line.seen(Answer(ahead=n, waiting_for="label"))) for n in (3, 1, 2, 1, 0)]
    assert shown_texts == ["排队中，前面还有 3 条", "排队中，前面还有 1 条", "正在排队，请稍候…",
                           "排队中，前面还有 1 条", "排队中，前面还有 0 条"]


def test_the_batch_summary_counts_stopped_rows_as_not_read_and_pasting_counts_rows():
    """Issue 28 item 4: after Stop, 未分析 left out the rows never reached (the chart counted them)."""
    from app.ui.batch_tab import describe_source, label_counts, summary_text
    from pipeline import Sentiment, UserInputError
    from pipeline.batch import BatchProgress

    good = Sentiment(LABELS[0], 0.9, 1.0, {LABELS[0]: 0.9, LABELS[1]: 0.1})
    results = [good, UserInputError("empty", "请先输入内容再发送"), None, None]
    line = summary_text(BatchProgress(total=4, results=results, done=2), stopped=True, seconds=1.0)
    chart = dict(zip(*label_counts(results).to_dict("list").values()))
    assert chart["未分析"] == 3 and "；3 条未分析（1 条空行或过长，2 条因停止未分析" in line, line
    _, info = describe_source(None, True, "一\n二\n\n三")
    assert info == "**粘贴的评论**：4 行"
