"""What the page shows: messages as safe Markdown, labels, the sentiment box, bubbles and timing lines.

Labels are data: everything here loops over pipeline.prompts.LABELS, and LABEL_COLORS is the one web-side
table a new label adds a row to.
"""

from __future__ import annotations

import html
import re

from pipeline import LABEL_EMOJI, LABELS, UNCERTAIN_EMOJI, Mode, Request, UserInputError
from pipeline.messages import page_text

from ..service import Answer

# Each label's colour in the sentiment bar and the batch charts; NOT_READ is the batch tab's rows not labelled.
LABEL_COLORS = {"正面": "#30a46c", "负面": "#e5484d"}
NOT_READ = "未分析"
NOT_READ_COLOR = "#8b8d98"
STOPPED = page_text("stopped")
# What a finished reply's end says when the model did not end it itself.
ENDINGS = {"loop": page_text("looping"), "length": page_text("length")}


# Fenced blocks (closed or still streaming) and inline code spans, where Markdown already shows
# HTML as text; everywhere else it would render it, so it is escaped there.
_CODE = re.compile(r"(```[\s\S]*?(?:```|$)|`[^`\n]+`)")


def as_text_markdown(text: str) -> str:
    """Markdown that renders text's HTML tags and Markdown images as text.

    An image (`![alt](https://host/x.png)`, also reference-style) would make every viewer's browser
    fetch its URL, a tracking pixel that a user or a prompted model could plant; its `[` is escaped,
    so it shows as typed. Links stay links: nothing is fetched unless someone clicks.
    """
    parts = _CODE.split(text)
    return "".join(part if i % 2 else _as_text(part) for i, part in enumerate(parts))


def _as_text(part: str) -> str:
    return html.escape(part, quote=False).replace("![", "!\\[")


def label_text(sentiment) -> str:
    """A sentiment as shown on the page: "😄 正面 93%", or "😐 偏负面 58%" when it is too close to call."""
    if sentiment.uncertain:
        return f"{UNCERTAIN_EMOJI} 偏{sentiment.label} {sentiment.confidence:.0%}"
    return f"{LABEL_EMOJI.get(sentiment.label, '')} {sentiment.label} {sentiment.confidence:.0%}".strip()


def _seconds(ms: float | None) -> str:
    return "—" if ms is None else f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def timing_text(answer: Answer) -> str:
    """A message's inference times, e.g. "情感 120 ms · 回复 2.31 s（48 字，首字 400 ms）"."""
    parts = []
    if answer.sentiment is not None:
        parts.append(f"情感 {_seconds(answer.sentiment.latency_ms)}")
    stream = answer.stream
    if stream is not None and stream.latency_ms is not None:
        parts.append(f"回复 {_seconds(stream.latency_ms)}（{len(stream.text)} 字，"
                     f"首字 {_seconds(stream.first_token_ms)}）")
    return " · ".join(parts)


# An Answer's `ahead` when its count would have gone up since the page last showed one (chat_tab.Queue).
QUEUED = -1


def waiting_text(answer: Answer) -> str | None:
    """What a message waiting for the model shows ("排队中，前面还有 2 条"); None when it is not waiting."""
    if answer.ahead is None:
        return None
    if answer.ahead == QUEUED:
        return page_text("queued")
    if answer.waiting_for == "reply" and answer.ahead == 1:
        return page_text("replying_to_others")
    return page_text("ahead", ahead=answer.ahead)


def bubble_text(mode: Mode, answer: Answer, streaming: bool = False, stopped: bool = False,
                waiting: str | None = None) -> str:
    """The answer's chat bubble: the reply (or, sentiment only, the label), then label and times in small print.

    While it waits for the model the reply's place says why (`waiting`, else the answer's place in line).
    """
    label = answer.sentiment and label_text(answer.sentiment)
    waiting = waiting or waiting_text(answer)
    if mode is Mode.EMOTION:
        body, notes = label or waiting or (STOPPED if stopped else "…"), [timing_text(answer)]
    else:
        stream = answer.stream
        reply = stream.text if stream is not None else ""
        ending = " ▌" if streaming else STOPPED if stopped else ENDINGS.get(stream and stream.finish_reason, "")
        body = (as_text_markdown(reply) + ending) if reply or not waiting else waiting
        notes = [label if mode is Mode.BOTH else None, timing_text(answer)]
    footer = " · ".join(n for n in notes if n)
    return f"{body or '…'}\n\n*⏱ {footer}*" if footer else body or "…"


def excerpt(text: str, limit: int = 24) -> str:
    """The start of a message, for naming it in little space."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sentiment_html(sentiment=None, message: str | None = None, status: str | None = None) -> str:
    """The side box: the verdict, a bar of each label's share, and which message it is about (or a status line)."""
    about = f'<div class="about">「{html.escape(excerpt(message))}」</div>' if message else ""
    if sentiment is None:
        return f'<div class="verdict pending">{html.escape(status or "")}</div>{about}'
    shares = [(label, sentiment.scores.get(label, 0.0)) for label in LABELS]
    legend = " · ".join(f"{label} {share:.0%}" for label, share in shares)
    segments = "".join(f'<span style="width:{share * 100:.1f}%;background:{LABEL_COLORS[label]}"></span>'
                       for label, share in shares)
    names = "".join(f"<span>{label} {share:.0%}</span>" for label, share in shares)
    bar = f'<div class="bar" title="{legend}">{segments}</div><div class="bar-legend">{names}</div>'
    why = f'<div class="about">{page_text("uncertain")}</div>' if sentiment.uncertain else ""
    return f'<div class="verdict">{html.escape(label_text(sentiment))}</div>{bar}{why}{about}'


def sentiment_box(request: Request, answer: Answer) -> str:
    """The sentiment box for this turn as it stands: its label, what the label waits for, or chat only."""
    if not request.wants_label:
        return sentiment_html(message=request.text, status=CHAT_ONLY_SENTIMENT)
    if answer.sentiment is not None:
        return sentiment_html(answer.sentiment, request.text)
    return sentiment_html(message=request.text, status=waiting_text(answer) or "…")


IDLE_SENTIMENT = sentiment_html(status=page_text("idle"))
CHAT_ONLY_SENTIMENT = page_text("chat_only")


def notice_text(exc: UserInputError) -> str:
    """The line under the input box for a refused message (bad input, a full line), in Chinese."""
    return f"⚠️ {as_text_markdown(exc.chinese)}"
