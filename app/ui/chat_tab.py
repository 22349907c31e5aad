"""The chat tab's callbacks: Send (a message shown, labelled, then answered), Stop and Clear.

Plain functions of the service and the tab's Session, so tests call them as Gradio does.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, NamedTuple

import gradio as gr

from pipeline import UserInputError
from pipeline.messages import page_text

from ..gate import Cancelled, Job
from ..service import Answer, ModelService
from .render import IDLE_SENTIMENT, bubble_text, notice_text, sentiment_box, timing_text
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
        request = service.prepare(text, session.history, mode, what="message")
        steps = service.run(request, job, before_reply=lambda r: session.reply_turn(
            turn, r, service, waiting=bubble_text(r.mode, answer, waiting=page_text("after_own"))))
    except UserInputError as exc:  # bad input or a full line: refused before it leaves the box
        yield shown(notice=notice_text(exc))
        return
    turn = session.start(request, job)
    answer, last_words, notice = Answer(), None, ""
    try:
        # The box changes only when this turn's own box does: a newer message's label, shown while this
        # reply still streams, stays.
        box = sentiment_box(request, answer)
        with session.showing() as chat:
            yield shown(textbox="", chat=chat, sentiment=box, timing="", notice="", stop=gr.update(interactive=True))
        for answer in steps:
            streaming = answer.stream is not None and answer.stream.finish_reason is None
            if not session.write(turn, bubble_text(request.mode, answer, streaming=streaming)):
                break  # cleared
            new_box = sentiment_box(request, answer)
            with session.showing() as chat:
                yield shown(chat=chat, sentiment=new_box if new_box != box else gr.skip(), timing=timing_text(answer))
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
            yield shown(chat=chat, timing=timing_text(answer), notice=notice or gr.skip(),
                        stop=gr.update(interactive=session.running))


def stop_turns(session: Session):
    """Stop: cancel the session's running and waiting turns; the chat keeps what was said so far."""
    session.cancel_all()
    return session.chat_value(), gr.update(interactive=False)


def clear_session(session: Session):
    """Clear: stop everything and forget the conversation."""
    session.clear()
    return [], IDLE_SENTIMENT, "", "", "", gr.update(interactive=False)
