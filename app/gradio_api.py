"""The named Gradio API (for gradio_client): /sentiment, /chat and /classify_many, beside the page.

Async, so that Gradio's cancel (gradio_client's job.cancel(), a client gone) lands at once: the wait for the
model or for the next token is abandoned (app.streaming), which cancels the job, ends the engine's generation
at its next token and gives the model to the next in line.
"""

from __future__ import annotations

import html
from contextlib import contextmanager
from typing import AsyncIterator, Iterator, Literal, TypedDict, get_type_hints

import gradio as gr

from pipeline import LABELS, Mode, UserInputError

from .client_key import TrustedProxies, request_client
from .gate import Cancelled, Job
from .service import ModelService
from .http_api import classify_result
from .streaming import result_of, steps_of

SENTIMENT_DOC = """判断一段中文文本的情感（{labels}）。The sentiment of one text.

参数 text (str)：要判断的文本，约 1500 字以内。
返回 (dict)：label {labels_or}；confidence 为所选标签的概率；uncertain 为 true 时褒贬参半、模型拿不准；inference_time_ms。
不需要 Gradio 客户端时，可用 JSON 接口：POST /api/infer {{"text": "...", "mode": "emotion"}}。""".format(
    labels="/".join(LABELS), labels_or="|".join(f'"{label}"' for label in LABELS))

CHAT_DOC = """多轮对话：回复 message，流式返回到目前为止的回复文本 (str)。A streamed chat reply.

参数 message (str)：这一轮的消息。history (list | None)：之前的对话，[{"role": "user"|"assistant", "content": str}]，最早的先丢弃以适应上下文。
返回：逐步返回的回复文本，最后一次为完整回复。
不需要 Gradio 客户端时，可用 JSON 接口：POST /api/infer {"text": "...", "mode": "chat", "history": [...]}。"""

CLASSIFY_MANY_DOC = """批量情感分析：一次判断多条文本。Sentiment of many texts in one call.

参数 texts (list[str])：要分析的文本，每批最多 BATCH_MAX_TEXTS 条（默认 5000）。
返回：{"results": [{"emotion_label", "confidence", "uncertain", "error"}, ...], "labelled", "refused", "inference_time_ms"}，与输入一一对应；空的或过长的文本在 "error" 里说明原因，不影响其他条。
同样的接口：POST /api/classify {"texts": ["...", "..."]}。"""


class SentimentResult(TypedDict):
    """What /sentiment returns."""

    label: Literal[LABELS]  # one of pipeline.prompts.LABELS
    confidence: float
    uncertain: bool
    inference_time_ms: float


def user_error(message) -> gr.Error:
    """A message for an API caller, as Gradio sends it: escaped (Gradio renders it as HTML), no traceback logged."""
    return gr.Error(html.escape(str(message), quote=False), print_exception=False)


@contextmanager
def api_errors() -> Iterator[None]:
    """A refusal raised in the block (bad input, a full line), as the Gradio error an API caller gets (in English)."""
    try:
        yield
    except UserInputError as exc:
        raise user_error(exc) from None


async def sentiment_api(service: ModelService, text: str, client: str | None = None) -> SentimentResult:
    """The sentiment of text: {"label", "confidence": 0..1, "uncertain": bool, "inference_time_ms": float}."""
    job = Job(client)
    with api_errors():
        request = service.prepare(text, mode=Mode.EMOTION, tags=False)
        answer = await result_of(lambda: service.answer(request, job), job)
    sentiment = answer.sentiment
    return {"label": sentiment.label, "confidence": round(sentiment.confidence, 4), "uncertain": sentiment.uncertain,
            "inference_time_ms": round(sentiment.latency_ms, 1)}


async def chat_api(service: ModelService, message: str, history: list | None = None,
                   client: str | None = None) -> AsyncIterator[str]:
    """A reply to message after history ([{"role", "content"}, ...]), streamed as the text so far."""
    job = Job(client)
    with api_errors():
        steps = service.run(service.prepare(message, history, Mode.CHAT, what="message", tags=False), job)
    sent = None
    try:
        async for answer in steps_of(steps, job):
            if answer.stream is not None and answer.stream.text != sent:
                sent = answer.stream.text
                yield sent
    except Cancelled:
        return
    if sent is None:  # the model ended its turn at once: the answer is "", not a missing one
        yield ""


async def classify_many_api(service: ModelService, texts: list[str], client: str | None = None) -> dict:
    """Labels of many texts, as POST /api/classify answers them; a bad text gets an error in its place."""
    job = Job(client)
    try:
        with api_errors():
            return classify_result(await result_of(lambda: service.classify_all(texts, job), job))
    except Cancelled:
        raise user_error("cancelled") from None


def add_named_api(demo: gr.Blocks, service: ModelService, trusted: TrustedProxies | None = None) -> None:
    """Add /sentiment, /chat and /classify_many to demo's API, each under its own name, typed and described.

    A caller is its address (X-Forwarded-For read from trusted proxies only), for the gate's per-client bound.
    """
    trusted = trusted or TrustedProxies()

    async def sentiment(text: str, request: gr.Request) -> SentimentResult:
        return await sentiment_api(service, text, request_client(request, trusted))

    async def chat(message: str, history: list[dict[str, str]] | None = None,
                   request: gr.Request = None) -> AsyncIterator[str]:
        async for text in chat_api(service, message, history, request_client(request, trusted)):
            yield text

    async def classify_many(texts: list[str], request: gr.Request) -> dict:
        return await classify_many_api(service, texts, request_client(request, trusted))

    for fn, description in ((sentiment, SENTIMENT_DOC), (chat, CHAT_DOC), (classify_many, CLASSIFY_MANY_DOC)):
        # Resolved annotations (this module's are strings, PEP 563): the API page shows real types, not "Any".
        fn.__annotations__ = get_type_hints(fn)
        # Gradio starts every event at once: the service's gate is the one line in front of the model.
        dependency = gr.api(fn, api_name=fn.__name__, api_description=description, concurrency_limit=None)
        for component_id, name in zip(dependency["inputs"], fn.__annotations__):
            demo.blocks[component_id].label = name  # instead of "the '1st' Api component"
