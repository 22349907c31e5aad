"""The OpenAI-compatible door (/v1/models, /v1/chat/completions) through the official `openai` client, on the
launched app: the tiny real model for the model's paths, the fake engine where a reply must be known exactly."""

from __future__ import annotations

import httpx
import openai
import pytest

from app.openai_api import StopText, conversation, OpenAIError
from tests.fakes import FakeEngine
from tests.served import PacedModel, RecordingEngine, hold_model, serve, wait_until
from app.gate import Job

MAX_NEW_TOKENS = 400


@pytest.fixture(scope="module")
def engine(tiny_engine_with):
    """The tiny engine with room for a long reply (the hang-up test needs one), recording its prompts."""
    return RecordingEngine(tiny_engine_with(chat_max_new_tokens=MAX_NEW_TOKENS))


@pytest.fixture(scope="module")
def served_settings() -> dict:
    return {"queue_max_size": 1}


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    # No retries: a refusal must reach the test as it was sent.
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def fake_url():
    """The app on the fake engine, named qwen-test: every reply is "ab", "cd", "ef", "gh"."""
    with serve(FakeEngine(reply_pieces=["ab", "cd", "ef", "gh"]), served_model_name="qwen-test") as app:
        yield app.local_url.rstrip("/")


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_models_lists_the_loaded_model(client, engine):
    models = client.models.list()
    assert [m.id for m in models.data] == [engine.model_name]
    assert client.models.retrieve(engine.model_name).id == engine.model_name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_model_id_setting_names_the_model(fake_url):
    fake = openai.OpenAI(base_url=f"{fake_url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in fake.models.list().data] == ["qwen-test"]
    reply = fake.chat.completions.create(model="qwen-test", messages=user("你好"))
    assert reply.model == "qwen-test" and reply.choices[0].message.content == "abcdefgh"
    with pytest.raises(openai.NotFoundError) as caught:
        fake.chat.completions.create(model="fake-model", messages=user("你好"))
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"


def test_completion_honours_max_tokens_with_real_token_counts(client, engine):
    with PacedModel(engine._engine, per_token_s=0):  # no end-of-turn token: the reply runs to max_tokens
        reply = client.chat.completions.create(model=engine.model_name, messages=user("讲一个故事"), max_tokens=5)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason == "length" and choice.message.content
    assert reply.usage.completion_tokens == 5
    assert reply.usage.prompt_tokens == len(engine.prompts[-1])
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5


def test_max_completion_tokens_is_the_same_limit(client, engine):
    with PacedModel(engine._engine, per_token_s=0):
        reply = client.chat.completions.create(model=engine.model_name, messages=user("讲一个故事"),
                                               max_completion_tokens=3)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3


def greedy(client: openai.OpenAI, engine, messages: list, **options):
    """A chat completion at temperature 0 on the engine's model: the same messages give the same reply."""
    return client.chat.completions.create(model=engine.model_name, messages=messages, temperature=0, **options)


def test_streaming_gives_the_same_reply_in_chunks_then_usage(client, engine):
    messages = user("今天天气怎么样")
    with PacedModel(engine._engine, per_token_s=0):
        whole = greedy(client, engine, messages, max_tokens=8)
        chunks = list(greedy(client, engine, messages, max_tokens=8, stream=True,
                             stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: the same reply, whole or streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_ends_with_done(url, engine):
    body = {"messages": user("你好"), "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_history_and_system_message_make_the_prompt(client, engine):
    messages = [{"role": "system", "content": "你是一只猫。"},
                {"role": "user", "content": "第一个问题"},
                {"role": "assistant", "content": [{"type": "text", "text": "第一个回答"}]},
                {"role": "user", "content": [{"type": "text", "text": "第二个"}, {"type": "text", "text": "问题"}]}]
    client.chat.completions.create(model=engine.model_name, messages=messages, max_tokens=2)
    history = [{"role": "user", "content": "第一个问题"}, {"role": "assistant", "content": "第一个回答"}]
    expected = engine.prepare("第二个问题", history, "chat", what="message", tags=False, system="你是一只猫。")
    assert engine.prompts[-1] == list(expected.prompt_ids)
    assert engine.prompts[-1] != list(engine.prepare("第二个问题", history, "chat", tags=False).prompt_ids)
    prompt = engine.tokenizer.decode(engine.prompts[-1])
    assert prompt.index("你是一只猫。") < prompt.index("第一个问题") < prompt.index("第一个回答") < prompt.index("第二个问题")


def test_stop_cuts_the_reply_before_the_stop_string(client, engine):
    messages = user("写一段话")
    with PacedModel(engine._engine, per_token_s=0):
        full = greedy(client, engine, messages, max_tokens=16).choices[0].message.content
        stop = full[len(full) // 2:len(full) // 2 + 2]
        cut = greedy(client, engine, messages, max_tokens=16, stop=[stop, "never-said"])
    assert cut.choices[0].message.content == full[:full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_stop_across_streamed_pieces_is_held_back(fake_url):
    fake = openai.OpenAI(base_url=f"{fake_url}/v1", api_key="unused", max_retries=0)
    chunks = list(fake.chat.completions.create(model="qwen-test", messages=user("你好"), stop="de", stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(pieces) == "abc" and chunks[-1].choices[0].finish_reason == "stop"
    whole = fake.chat.completions.create(model="qwen-test", messages=user("你好"), stop=["zz", "gh"])
    assert whole.choices[0].message.content == "abcdef"


def test_stop_text_holds_back_a_possible_start():
    cut = StopText(["END"])
    assert cut.advance("abcE") == "abc"
    assert cut.advance("abcEN") == ""
    assert cut.advance("abcENx") == "ENx"
    assert cut.advance("abcENxEND tail") == "" and cut.stopped == "END"
    assert StopText(["END"]).advance("abE", final=True) == "abE"


def test_seed_makes_a_sampled_reply_repeatable(client, engine):
    def sampled(seed):
        return client.chat.completions.create(model=engine.model_name, messages=user("随便说点什么"), max_tokens=10,
                                              temperature=1.0, top_p=0.95, seed=seed).choices[0].message.content

    with PacedModel(engine._engine, per_token_s=0):
        first, again, other = sampled(1), sampled(1), sampled(2)
    assert first == again and first != other


def test_sentiment_extension_labels_the_last_user_message(url, engine):
    body = {"messages": user("这家餐厅太差了"), "max_tokens": 2, "sentiment": True}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
    assert reply["sentiment"]["label"] in ("正面", "负面") and 0.5 <= reply["sentiment"]["confidence"] <= 1
    assert engine.classified[-1][0] == "这家餐厅太差了"
    assert "sentiment" not in httpx.post(f"{url}/v1/chat/completions", json={**body, "sentiment": False},
                                         timeout=60).json()


@pytest.mark.parametrize("messages, extra, param, words", [
    ([], {}, "messages", "at least one message"),
    ([{"role": "robot", "content": "你好"}], {}, "messages.[0].role", "unknown role 'robot'"),
    (user("   "), {}, "messages", "empty"),
    (user("你好") + [{"role": "assistant", "content": "嗯"}], {}, "messages", "last message"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], {}, "messages.[0].content",
     "only text parts"),
    (user("你好"), {"n": 2}, "n", "n must be 1"),
    (user("你好"), {"temperature": 3}, "temperature", "temperature"),
    (user("你好"), {"max_tokens": 0}, "max_tokens", "max_tokens"),
    (user("你好"), {"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    (user("你好"), {"seed": 2**64}, "seed", "seed"),
])
def test_bad_requests_are_400_in_openai_shape(client, engine, messages, extra, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=engine.model_name, messages=messages, **extra)
    error = caught.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and words in error["message"]


def test_a_message_too_long_is_400_with_the_limit(client, engine):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=engine.model_name, messages=user("很长的消息" * 200))
    error = caught.value.response.json()["error"]
    assert error["code"] in ("too_long", "too_long_unread") and str(engine.max_input_tokens) in error["message"]


def test_bad_json_and_wrong_method_are_in_openai_shape(url):
    response = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", timeout=10)
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    response = httpx.get(f"{url}/v1/chat/completions", timeout=10)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_a_full_line_is_503_with_retry_after(client, app, engine):
    holder = hold_model(app.service.gate)  # holds the model
    waiter = Job()
    app.service.gate.admit(waiter)  # waits: the line (queue_max_size=1) is full
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=engine.model_name, messages=user("你好"), stream=True)
        response = caught.value.response
        assert response.status_code == 503 and response.headers["retry-after"]
        assert response.json()["error"]["code"] == "busy" and response.json()["error"]["type"] == "server_error"
    finally:
        waiter.cancel()
        holder.cancel()


def test_a_loading_model_is_503(tmp_path):
    with serve(None) as app:
        response = httpx.post(f"{app.local_url.rstrip('/')}/v1/chat/completions", json={"messages": user("你好")},
                              timeout=10)
        assert response.status_code == 503 and response.json()["error"]["code"] == "loading"


def test_a_client_that_closes_the_stream_ends_the_generation(client, app, engine):
    cancelled = engine.generations_cancelled
    with PacedModel(engine._engine, per_token_s=0.01) as paced:
        stream = client.chat.completions.create(model=engine.model_name, messages=user("讲一个很长的故事"),
                                                stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        wait_until(lambda: paced.forwards >= 3, what="the reply to be under way")
        stream.close()
        closed_at = paced.forwards
        wait_until(lambda: engine.active_generations == 0 and engine.generations_cancelled == cancelled + 1,
                   what="the generation to end")
        # Ended at its next token or so, not at the token limit.
        assert paced.forwards - closed_at <= 3 and paced.forwards < MAX_NEW_TOKENS
    health = wait_until(lambda: (h := httpx.get(f"{app.local_url.rstrip('/')}/healthz").json())["waiting"] == 0
                        and not h["busy"] and h, what="/healthz idle")
    assert health["active_generations"] == 0


def test_conversation_joins_system_messages_and_keeps_order():
    talk = conversation([{"role": "system", "content": "A"}, {"role": "user", "content": "1"},
                         {"role": "developer", "content": "B"}, {"role": "assistant", "content": None},
                         {"role": "user", "content": "2"}])
    assert talk.system == "A\n\nB" and talk.message == "2"
    assert talk.history == [{"role": "user", "content": "1"}, {"role": "assistant", "content": ""}]
    with pytest.raises(OpenAIError):
        conversation([{"role": "system", "content": "A"}])
