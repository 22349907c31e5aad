"""The chat tab's callbacks: Send (a message shown, labelled, then answered), Stop and Clear.

Plain functions of the service and the tab's Session, so tests call them as Gradio does.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Iterator, NamedTuple

import gradio as gr

from pipeline import UserInputError
from pipeline.messages import page_text, refusal

from ..gate import Cancelled, Job
from ..service import Answer, ModelService
from .render import IDLE_SENTIMENT, QUEUED, bubble_text, notice_text, sentiment_box, timing_text
from .session import Session

log = logging.getLogger(__name__)


class Shown(NamedTuple):
    """One update of the page by a Send: each output, or gr.skip() to leave it as it is."""

    textbox: Any
    chat: Any
    sentiment: Any
    timing: Any
    notice: Any
    stop: Any


def shown(**changes) -> Shown:
    """An update that changes only the outputs named."""
    return Shown(**{name: changes.get(name, gr.skip()) for name in Shown._fields})


def respond(service: ModelService, text, mode, session: Session) -> Iterator[Shown]:
    """One Send, start to end: the message shown, its label, then its reply streamed.

    Yields page updates (Shown). Bad input and a full line
    are refused before the message leaves the input box: the notice under it says why, in Chinese, and
    the chat is untouched. Stop, Clear and a closed tab cancel the turn's job: the engine stops at its
    next token and the model goes to the next in line; what was said so far stays in the chat.
    """
    job = Job(session.client)
    try:
        check_page_limit(service, text)
        request = service.prepare(text, session.history, mode, what="message")
        steps = service.run(request, job, before_reply=lambda r: session.reply_turn(
            turn, r, service, waiting=bubble_text(r.mode, answer, waiting=page_text("after_own"))))
    except UserInputError as exc:  # bad input or a full line: refused before it leaves the box
        yield shown(notice=notice_text(exc))
        return
    turn = session.start(request, job)
    answer, last_words, notice, line = Answer(), None, "", Queue()
    try:
        # The side box (label and timing) is the newest message's alone (Session.owns_box): an older
        # reply still streaming leaves it as it is.
        box = sentiment_box(request, answer)
        with session.showing() as chat:
            yield shown(textbox="", chat=chat, sentiment=box, timing="", notice="", stop=gr.update(interactive=True))
        for answer in steps:
            view = line.seen(answer)
            streaming = answer.stream is not None and answer.stream.finish_reason is None
            if not session.write(turn, bubble_text(request.mode, view, streaming=streaming)):
                break  # cleared
            new_box, mine = sentiment_box(request, view), session.owns_box(turn)
            with session.showing() as chat:
                yield shown(chat=chat, sentiment=new_box if mine and new_box != box else gr.skip(),
                            timing=timing_text(answer) if mine else gr.skip())
            box = new_box
        else:
            last_words = bubble_text(request.mode, answer)
    except Cancelled:
        pass
    except UserInputError as exc:  # the history grew past the context while the turn waited
        last_words = notice = notice_text(exc)
    except Exception:  # the model failed: say so in the turn's place; the rest of the chat stays
        log.exception("a turn failed")
        last_words = notice = f"⚠️ {page_text('failed')}"
    finally:
        steps.close()  # ends a generation still running (a closed tab, Gradio's cancel)
        job.cancel()  # a no-op for a finished job
        if last_words is None:  # stopped: by Stop, Clear, a closed tab or Gradio's cancel
            last_words = bubble_text(request.mode, answer, stopped=True)
        session.finish(turn, last_words, answer.stream.text if answer.stream is not None else "")
    if turn.era == session.era:
        with session.showing() as chat:
            yield shown(chat=chat, timing=timing_text(answer) if session.owns_box(turn) else gr.skip(),
                        notice=notice or gr.skip(), stop=gr.update(interactive=session.running))


def check_page_limit(service: ModelService, text) -> None:
    """Refuse a message longer than the counter's limit, in the counter's words (UserInputError).

    The counter under the input turns red past engine.max_input_chars; the model's own check counts
    tokens, and Chinese text runs about 1.5 characters a token, so a little over the counter's number
    could pass it and a lot over would be refused with a limit from that text's own ratio. The page
    holds to one rule instead: red means refused, and the refusal states the counter's number.
    """
    limit = service.engine.max_input_chars if service.engine is not None else 0
    if limit and isinstance(text, str) and len(text) > limit:
        raise refusal("too_long_unread", chars=len(text), limit=service.engine.max_input_tokens, limit_chars=limit)


class Queue:
    """A turn's place in line as shown: the number only ever goes down.

    The gate counts the turns ahead, and a label sent later (someone else's) goes before a reply, so the
    count can rise while a message waits. A higher count than one already shown is told as "queued",
    without a number, rather than as a step backwards.
    """

    def __init__(self) -> None:
        self.lowest: int | None = None

    def seen(self, answer: Answer) -> Answer:
        """The answer as the page shows it: `ahead` left out where it would count backwards."""
        if answer.ahead is None:
            return answer
        if self.lowest is None or answer.ahead <= self.lowest:
            self.lowest = answer.ahead
            return answer
        return replace(answer, ahead=QUEUED)


def stop_turns(session: Session):
    """Stop: cancel the session's running and waiting turns; the chat keeps what was said so far."""
    session.cancel_all()
    return session.chat_value(), gr.update(interactive=False)


def clear_session(session: Session):
    """Clear: stop everything and forget the conversation."""
    session.clear()
    return [], IDLE_SENTIMENT, "", "", "", gr.update(interactive=False)
