"""The page's callbacks against the fake engine: label first, streaming, Stop, Clear, sessions, errors."""

from __future__ import annotations

import asyncio
import os
import threading

import gradio as gr
import pytest

import demo
from demo import Session, clear_session, label_step, reply_step, start_turn, stop_turns
from pipeline import LABELS, Mode, UserInputError
from tests.fakes import FakeEngine
from tests.served import wait_until
from webapi import ModelService


def service_for(engine, queue_max_size: int = 4) -> ModelService:
    return ModelService(engine, queue_max_size)


def send(service, session, text, mode="both"):
    """What the page runs on Send, up to and including the label; returns the label step's outputs."""
    start_turn(service, text, mode, session)
    return label_step(service, session)


def reply(service, session) -> list[tuple]:
    """The reply event's updates, less the "no change" one it yields when it has nothing to reply to."""
    return [u for u in reply_step(service, session) if not all(isinstance(x, NO_CHANGE) for x in u)]


NO_CHANGE = type(gr.skip())


def chat_calls(engine):
    return [args for name, args in engine.calls if name == "chat"]


class Consumer(threading.Thread):
    """Iterates a generator the way Gradio does, in another thread, recording each update."""

    def __init__(self, generator):
        super().__init__(daemon=True)
        self.generator, self.updates, self.error = generator, [], None

    def run(self):
        try:
            for update in self.generator:
                self.updates.append(update)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc


@pytest.mark.parametrize("text, shown", [
    ("今天很开心", "😄 正面 90%"), ("太差了", "😞 负面 90%"), ("还行吧，有点差", "😐 偏负面 58%"), ("一般，挺好", "😐 偏正面 58%"),
])
def test_the_label_says_when_it_is_too_close_to_call(text, shown):
    engine, session = FakeEngine(), Session()
    label, _, chat = send(service_for(engine), session, text, "emotion")
    assert label == shown and shown in chat[-1]["content"]


def test_the_reply_event_of_a_sentiment_only_message_leaves_the_chat_alone():
    # Gradio blanks the outputs of a generator event that yields nothing: the whole chat disappeared
    # after a sentiment-only message on the live page (stand-in model) until this yielded "no change".
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    send(service, session, "物流很快", "emotion")
    updates = list(reply_step(service, session))
    assert len(updates) == 1 and all(isinstance(u, NO_CHANGE) for u in updates[0])
    assert session.display[0]["content"] == "物流很快" and "正面" in session.display[1]["content"]


def test_send_shows_the_message_and_clears_the_input_before_any_model_work():
    engine, session = FakeEngine(), Session()
    textbox, chat, label, timing = start_turn(service_for(engine), "今天很开心", "both", session)
    assert textbox == ""
    assert chat == [{"role": "user", "content": "今天很开心"}, {"role": "assistant", "content": "…"}]
    assert label == "…"
    assert [name for name, _ in engine.calls] == ["route"]


def test_the_label_comes_first_then_the_reply():
    engine, session = FakeEngine(reply_pieces=["好", "的"]), Session()
    service = service_for(engine)
    label, timing, chat = send(service, session, "今天很开心")
    assert label == "😄 正面 90%"
    assert "情感" in timing
    assert [name for name, _ in engine.calls] == ["route", "classify"]  # no chat yet
    assert "😄 正面 90%" in chat[-1]["content"]
    updates = reply(service, session)
    assert [name for name, _ in engine.calls] == ["route", "classify", "chat"]
    final_chat, final_timing = updates[-1]
    assert final_chat[-1]["content"].startswith("好的")
    assert "回复" in final_timing and "2 tokens" in final_timing


def test_the_reply_streams_piece_by_piece():
    engine, session = FakeEngine(reply_pieces=["你", "好", "！"]), Session()
    service = service_for(engine)
    send(service, session, "你好")
    contents = [update[0][-1]["content"] for update in reply(service, session)]
    assert contents[0].startswith("你 ▌")
    assert contents[1].startswith("你好 ▌")
    assert contents[2].startswith("你好！ ▌")
    assert contents[-1].startswith("你好！\n\n*⏱") and "▌" not in contents[-1]
    assert session.history == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]


def test_stop_ends_generation_in_the_engine_and_keeps_the_partial_reply():
    gate = threading.Event()
    engine, session = FakeEngine(reply_pieces=["一", "二", "三"], gate=gate), Session()
    service = service_for(engine)
    send(service, session, "数一数")
    consumer = Consumer(reply_step(service, session))
    consumer.start()
    wait_until(lambda: consumer.updates, what="the first streamed piece")
    assert engine.active_generations == 1 and service.gate.busy

    chat = stop_turns(session)

    consumer.join(10)
    assert consumer.error is None
    assert engine.generations_cancelled == 1 and engine.active_generations == 0
    assert not service.gate.busy  # the model is free for the next job
    assert chat[-1]["content"].startswith("一（已停止）")
    assert session.history[-1] == {"role": "assistant", "content": "一"}


def test_stop_before_the_model_is_reached_runs_nothing():
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    start_turn(service, "你好", "both", session)
    chat = stop_turns(session)
    assert chat[-1]["content"] == "（已停止）"
    assert label_step(service, session) == (gr.skip(), gr.skip(), gr.skip())
    assert reply(service, session) == []
    assert [name for name, _ in engine.calls] == ["route"]


def test_stop_while_waiting_for_the_model_leaves_the_line():
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    send(service, session, "你好")
    other = demo.Job()
    service.gate.enqueue(other)
    service.gate.acquire(other)  # someone else (e.g. /api/infer) holds the model
    consumer = Consumer(reply_step(service, session))
    consumer.start()
    wait_until(lambda: service.gate.waiting == 1, what="the reply to wait for the model")
    stop_turns(session)
    consumer.join(10)
    assert consumer.updates == [] and consumer.error is None
    assert service.gate.waiting == 0 and chat_calls(engine) == []


def test_clear_stops_the_reply_and_empties_the_conversation():
    gate = threading.Event()
    engine, session = FakeEngine(gate=gate), Session()
    service = service_for(engine)
    send(service, session, "第一句")
    gate.set()
    reply(service, session)
    gate.clear()
    send(service, session, "第二句")
    consumer = Consumer(reply_step(service, session))
    consumer.start()
    wait_until(lambda: consumer.updates, what="the first streamed piece")

    assert clear_session(session) == ([], "", "", "")

    consumer.join(10)
    assert engine.generations_cancelled == 1 and engine.active_generations == 0
    assert session.display == [] and session.history == [] and session.turns == []
    assert len(consumer.updates) == 1  # nothing more is written into the cleared chat
    send(service, session, "重新开始")
    gate.set()
    reply(service, session)
    assert chat_calls(engine)[-1] == ([], "重新开始")  # the old conversation is gone for the model too


def test_each_session_has_its_own_history():
    engine = FakeEngine()
    service = service_for(engine)
    alice, bob = Session(), Session()
    send(service, alice, "我是小明")
    reply(service, alice)
    send(service, bob, "我是小红")
    reply(service, bob)
    send(service, alice, "我是谁？")
    reply(service, alice)
    history, message = chat_calls(engine)[-1]
    assert message == "我是谁？"
    assert [m["content"] for m in history] == ["我是小明", "回复：我是小明"]
    assert [m["content"] for m in bob.history] == ["我是小红", "回复：我是小红"]


def test_a_second_message_waits_for_the_first_reply():
    engine = FakeEngine()
    service, session = service_for(engine), Session()
    start_turn(service, "第一句", "both", session)
    start_turn(service, "第二句", "both", session)
    label_step(service, session)
    label_step(service, session)  # Gradio may label the second turn before replying to the first
    reply(service, session)
    reply(service, session)
    shown = [m["content"].split("\n")[0] for m in session.display]
    assert shown == ["第一句", "回复：第一句", "第二句", "回复：第二句"]
    assert [m["content"] for m in chat_calls(engine)[1][0]] == ["第一句", "回复：第一句"]


def test_a_turn_whose_events_never_ran_is_answered_by_the_next_ones():
    engine = FakeEngine()
    service, session = service_for(engine), Session()
    start_turn(service, "第一句", "both", session)  # its label and reply events were refused: queue full
    start_turn(service, "第二句", "both", session)
    label, _, _ = label_step(service, session)
    reply(service, session)
    assert label == "😄 正面 90%"
    assert [text for name, text in engine.calls if name == "classify"] == ["第一句", "第二句"]
    assert [message for _, message in chat_calls(engine)] == ["第一句", "第二句"]
    assert session.turns == [] and "…" not in [m["content"] for m in session.display]


def test_a_reply_never_comes_before_its_label():
    engine = FakeEngine()
    service, session = service_for(engine), Session()
    start_turn(service, "你好", "both", session)
    assert reply(service, session) == []  # the label event has not run yet
    label_step(service, session)
    assert reply(service, session)[-1][0][-1]["content"].startswith("回复：你好")


def test_stop_after_the_label_keeps_it_and_marks_the_reply_stopped():
    engine = FakeEngine()
    service, session = service_for(engine), Session()
    send(service, session, "今天很开心")
    chat = stop_turns(session)
    assert chat[-1]["content"].startswith("（已停止）") and "😄 正面 90%" in chat[-1]["content"]
    assert reply(service, session) == [] and chat_calls(engine) == []


@pytest.mark.parametrize("mode, text, expect", [
    ("emotion", "这家店太差了", "emotion"),
    ("chat", "这家店太差了", "chat"),
    ("both", "#EMOTION# 这家店太差了", "emotion"),
    ("both", "#CHAT# 这家店太差了", "chat"),
    ("emotion", "#chat# 这家店太差了", "chat"),
])
def test_the_mode_switch_and_typed_tags_pick_the_roles(mode, text, expect):
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    label, _, _ = send(service, session, text, mode)
    updates = reply(service, session)
    called = [name for name, _ in engine.calls if name != "route"]
    answer = session.display[-1]["content"]
    if expect == "emotion":
        assert called == ["classify"] and updates == []
        assert label == "😞 负面 90%" and answer.startswith("😞 负面 90%")
    else:
        assert called == ["chat"] and label == "—"
        assert answer.startswith("回复：这家店太差了")
    assert session.display[0]["content"] == "这家店太差了"  # the tag is not shown as part of the text


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("   ", "empty"),
    ("#EMOTION#", "empty"),
    ("长" * 1001, "too long"),
])
def test_bad_input_is_shown_as_a_gradio_error_and_nothing_is_sent(text, message):
    engine, session = FakeEngine(max_input_chars=1000), Session()
    with pytest.raises(gr.Error, match=message):
        start_turn(service_for(engine), text, "both", session)
    assert session.display == [] and session.turns == []


def test_a_full_queue_is_refused_before_the_message_leaves_the_input():
    engine, session = FakeEngine(), Session()
    with pytest.raises(gr.Error, match="busy, try again"):
        start_turn(service_for(engine), "你好", "both", session, queue_full=lambda: True)
    assert session.display == [] and engine.calls == []


def test_an_engine_error_during_the_reply_is_a_gradio_error_in_place_of_the_answer():
    engine, session = FakeEngine(), Session()
    service = service_for(engine)
    send(service, session, "你好")

    def refuse(history, message, max_new_tokens=None):
        raise UserInputError("message is too long for the context: 999 tokens")

    engine.chat = refuse
    generator = reply_step(service, session)
    chat, _ = next(generator)
    assert chat[-1]["content"].startswith("⚠️ message is too long")
    with pytest.raises(gr.Error, match="too long for the context"):
        next(generator)
    assert session.turns == [] and not service.gate.busy


def test_the_page_says_when_the_model_is_still_loading():
    with pytest.raises(gr.Error, match="still loading"):
        start_turn(ModelService(None, 4), "你好", "both", Session())


def test_html_typed_by_the_user_is_shown_as_text():
    assert demo.as_text_markdown("<b>粗体</b> & **强调**") == "&lt;b&gt;粗体&lt;/b&gt; &amp; **强调**"
    assert demo.as_text_markdown("看 `<i>` 和\n```html\n<p>x</p>\n```") == "看 `<i>` 和\n```html\n<p>x</p>\n```"
    assert demo.as_text_markdown("流式 ```\n<p>未闭合") == "流式 ```\n<p>未闭合"
    engine, session = FakeEngine(reply_pieces=["<script>alert(1)</script>"]), Session()
    service = service_for(engine)
    send(service, session, "<img src=x onerror=alert(1)>")
    reply(service, session)
    assert session.display[0]["content"] == "&lt;img src=x onerror=alert(1)&gt;"
    assert session.display[1]["content"].startswith("&lt;script&gt;")


def test_the_named_api_functions():
    engine = FakeEngine(reply_pieces=["a", "b"])
    service = service_for(engine)

    async def collect(agen):
        return [item async for item in agen]

    assert asyncio.run(demo.sentiment_api(service, "太差了")) == {
        "label": LABELS[1], "confidence": 0.9, "uncertain": False, "inference_time_ms": 1.5}
    assert asyncio.run(demo.sentiment_api(service, "还行，就是有点差")) == {
        "label": LABELS[1], "confidence": 0.58, "uncertain": True, "inference_time_ms": 1.5}
    assert asyncio.run(collect(demo.chat_api(service, "hi", [{"role": "user", "content": "x"}]))) == ["a", "ab"]
    with pytest.raises(gr.Error, match="empty"):
        asyncio.run(demo.sentiment_api(service, " "))
    with pytest.raises(gr.Error, match="role"):
        asyncio.run(collect(demo.chat_api(service, "hi", [{"role": "system", "content": "x"}])))
    assert not service.gate.busy and service.gate.waiting == 0 and engine.active_generations == 0
    assert [name for name, _ in engine.calls].count("chat") == 1  # the bad history never reached the model


def test_the_named_chat_api_answers_an_empty_reply_with_empty_text():
    service = service_for(FakeEngine(reply_pieces=[]))

    async def collect(agen):
        return [item async for item in agen]

    assert asyncio.run(collect(demo.chat_api(service, "hi"))) == [""]


def test_the_demo_runs_model_events_one_at_a_time_in_a_bounded_queue():
    app = demo.create_app(FakeEngine(), demo.AppSettings(queue_max_size=3))
    fns = {fn.name: fn for fn in app.demo.fns.values()}
    model_fns = [fns[name] for name in ("on_label", "on_reply", "sentiment", "chat")]
    assert {fn.concurrency_id for fn in model_fns} == {demo.MODEL_CONCURRENCY_ID}
    assert {fn.concurrency_limit for fn in model_fns} == {1}
    assert app.demo._queue.max_size == 3 and app.service.gate.max_waiting == 3
    public = {fn.api_name for fn in app.demo.fns.values() if fn.api_visibility == "public"}
    assert public == {"sentiment", "chat"}
    assert fns["on_start"].concurrency_id != demo.MODEL_CONCURRENCY_ID  # never waits behind the model
    assert fns["on_start"].concurrency_limit is None
    assert app.demo.analytics_enabled is False
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"  # set by importing demo, before gradio


def test_settings_come_from_env_and_flags_win():
    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "9000", "GRADIO_SHARE": "true",
           "QUEUE_MAX_SIZE": "5", "MODEL_DIR": "/models/a"}
    settings = demo.AppSettings.from_env(env)
    assert (settings.host, settings.port, settings.share, settings.queue_max_size, settings.model_dir) == (
        "0.0.0.0", 9000, True, 5, "/models/a")
    args = demo.parse_args(["--port", "9001", "--no-share", "--model-dir", "/models/b"])
    settings = demo.AppSettings.from_env(env, **vars(args))
    assert (settings.port, settings.share, settings.model_dir, settings.host) == (9001, False, "/models/b", "0.0.0.0")
    assert demo.AppSettings.from_env({}).port == 7860
    with pytest.raises(UserInputError, match="GRADIO_SERVER_PORT"):
        demo.AppSettings.from_env({"GRADIO_SERVER_PORT": "http"})
    with pytest.raises(UserInputError, match="queue_max_size"):
        demo.AppSettings(queue_max_size=0)
    flags = {row[0] for row in demo.AppSettings.describe()}
    assert {"--model-dir", "--host", "--port", "--share"} <= flags


def test_main_reports_missing_weights_without_serving(tmp_path, capsys):
    assert demo.main(["--model-dir", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_mode_values_match_the_engine():
    assert {value for _, value in demo.MODES} == {m.value for m in Mode}
