"""One browser tab's conversation, kept in gr.State: what the chat shows, what the model sees, the turns in flight."""

from __future__ import annotations

import copy
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from pipeline import Request

from ..client_key import session_key
from ..gate import Cancelled, Job
from ..service import ModelService
from .render import as_text_markdown

# How long a Send waits for another Send of the same tab to have its update sent (Session.showing);
# Gradio sends within milliseconds, so this bounds only a generator that is never resumed.
SHOWING_WAIT_S = 2.0


@dataclass(eq=False)
class Turn:
    """One message in progress: its request, its claim on the model and its answer's place in the chat."""

    request: Request
    job: Job
    reply_index: int
    era: int  # the session's era when sent: Clear starts a new one, and older turns write nothing
    done: threading.Event = field(default_factory=threading.Event)


class Session:
    """One browser tab's conversation, kept in gr.State: what the chat shows and what the model sees.

    The user may send while a reply streams: each message is its own event, and replies come in the
    order the messages were sent (each reply's prompt holds the replies before it). A plain class,
    not a dataclass: Gradio copies dataclass states field by field, and a Condition cannot be copied.
    """

    def __init__(self) -> None:
        self.client = session_key(uuid.uuid4().hex)  # the gate's client: each tab is one, for the per-client bound
        self.display: list[dict[str, str]] = []
        self.history: list[dict[str, str]] = []
        self.turns: list[Turn] = []  # sent and not finished, oldest first
        self.era = 0
        # The turn whose label and timing the side box shows: the newest message sent. Only it writes
        # there, so the box never mixes one message's label with another's timing.
        self.box_turn: Turn | None = None
        self._cond = threading.Condition()
        self._showing = threading.Lock()

    def __deepcopy__(self, memo) -> "Session":
        # gr.State deep-copies its initial (empty) value for each tab.
        session = Session()
        session.display, session.history = copy.deepcopy(self.display, memo), copy.deepcopy(self.history, memo)
        return session

    def chat_value(self) -> list[dict[str, str]]:
        """The Chatbot's value: a copy, so later writes don't race the page's update."""
        with self._cond:
            return [dict(m) for m in self.display]

    @contextmanager
    def showing(self) -> Iterator[list[dict[str, str]]]:
        """The chat to send, held until the caller's generator is resumed (see SHOWING_WAIT_S)."""
        # Two Sends of one tab run at once, and each sends the whole chat. Gradio enqueues an update
        # for the page before it resumes the generator that yielded it, so holding this from the copy
        # to the resumption puts the updates on the page in the order their copies were taken: a
        # reply's last words are never overwritten by an older copy that another Send sent late.
        held = self._showing.acquire(timeout=SHOWING_WAIT_S)
        try:
            yield self.chat_value()
        finally:
            if held:
                self._showing.release()

    def start(self, request: Request, job: Job) -> Turn:
        """Show the message with a placeholder answer; the turn is in line for its reply."""
        with self._cond:
            self.display.append({"role": "user", "content": as_text_markdown(request.text)})
            self.display.append({"role": "assistant", "content": "…"})
            turn = Turn(request, job, len(self.display) - 1, self.era)
            self.turns.append(turn)
            self.box_turn = turn
        job.on_cancel(self._notify)
        return turn

    def owns_box(self, turn: Turn) -> bool:
        """Whether the side box (label and timing) is this turn's: it is the newest message of the era."""
        with self._cond:
            return self.box_turn is turn and turn.era == self.era

    def write(self, turn: Turn, content: str) -> bool:
        """Put content in turn's place in the chat; False if Clear came since the turn was sent."""
        with self._cond:
            if turn.era != self.era:
                return False
            self.display[turn.reply_index]["content"] = content
            return True

    def reply_turn(self, turn: Turn, request: Request, service: ModelService, waiting: str) -> Request:
        """Wait until the replies sent before this turn's are done; the request, with their history.

        Meanwhile the turn's bubble says `waiting` (the earlier turn's updates carry it to the page).
        Cancelled if the turn is stopped while it waits.
        """
        with self._cond:
            while any(t.request.wants_reply for t in self.turns[: self.turns.index(turn)]):
                if turn.job.cancelled:
                    raise Cancelled("stopped before its reply")
                self.write(turn, waiting)
                self._cond.wait()
            history = list(self.history)
        return service.with_history(request, history)

    @property
    def running(self) -> bool:
        """Whether a turn is still waiting or running."""
        with self._cond:
            return bool(self.turns)

    def finish(self, turn: Turn, content: str, reply: str) -> None:
        """Write the turn's last words, keep its reply (whole or stopped) in the history, let the next turn go."""
        with self._cond:
            if self.write(turn, content) and reply:
                self.history += [{"role": "user", "content": turn.request.text},
                                 {"role": "assistant", "content": reply}]
            if turn in self.turns:
                self.turns.remove(turn)
            turn.done.set()
            self._cond.notify_all()

    def cancel_all(self, wait_s: float = 10.0) -> None:
        """Cancel every unfinished turn; wait (bounded) until each has written its last words."""
        with self._cond:
            turns = list(self.turns)
        for turn in turns:
            turn.job.cancel()
        for turn in turns:
            turn.done.wait(wait_s)

    def clear(self) -> None:
        """Forget the conversation; turns still running are cancelled and write nothing more."""
        with self._cond:
            self.era += 1
            self.box_turn = None
            self.display.clear()
            self.history.clear()
        self.cancel_all()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()
