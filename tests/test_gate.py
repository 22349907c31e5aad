"""The model's one line (app/gate.py): admission, order, quick jobs beside a reply, waiting counts, cancel; ModelService.run."""

from __future__ import annotations

import threading

import pytest

from app.gate import BUSY_MESSAGE, Busy, Cancelled, Job, ModelGate, ModelService
from pipeline import LABELS, Mode
from tests.fakes import FakeEngine
from tests.served import hold_model, wait_until


def start(gate: ModelGate, name, order: list, quick: bool = False) -> threading.Thread:
    """A thread whose job asks for a turn and records its name when it gets it."""
    job = Job()
    gate.admit(job)

    def run():
        with gate.turn(job, quick):
            order.append(name)
        gate.leave(job)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: gate.ahead_of(job) is not None, what=f"{name} to ask for its turn")
    return thread


def test_jobs_take_the_model_in_the_order_they_were_admitted_one_at_a_time():
    gate = ModelGate(max_waiting=3)
    holder, order = hold_model(gate), []
    threads = [start(gate, name, order) for name in range(3)]
    assert order == [] and gate.waiting == 3  # all wait while the holder has the model
    holder.cancel()
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2]
    assert not gate.busy and gate.waiting == 0


def test_a_quick_job_runs_beside_a_running_reply_and_goes_before_waiting_ones():
    """The engine lets a label in between a running reply's tokens, so the gate does not hold it back."""
    gate = ModelGate(max_waiting=4)
    holder, order = hold_model(gate), []
    replies = [start(gate, "reply 1", order), start(gate, "reply 2", order)]
    label = threading.Thread(target=lambda: (gate.admit(job := Job()), _take_and_leave(gate, job, order, "label")))
    label.start()
    label.join(10)
    assert order == ["label"]  # neither the running reply nor the waiting ones held it back
    holder.cancel()
    for thread in replies:
        thread.join(10)
    assert order == ["label", "reply 1", "reply 2"]


def _take_and_leave(gate, job, order, name):
    with gate.turn(job, quick=True):
        order.append(name)
    gate.leave(job)


def test_quick_jobs_take_turns_one_at_a_time_in_admission_order():
    gate = ModelGate(max_waiting=4)
    holder, order = hold_model(gate, quick=True), []
    labels = [start(gate, name, order, quick=True) for name in ("label 1", "label 2")]
    reply = start(gate, "reply", order)
    assert order == []
    holder.cancel()
    for thread in [*labels, reply]:
        thread.join(10)
    assert order == ["label 1", "label 2", "reply"]


def test_wait_for_turn_tells_how_many_turns_come_first_as_it_changes():
    gate = ModelGate(max_waiting=4)
    running_reply, running_label = hold_model(gate), hold_model(gate, quick=True)
    reply, told = Job(), []
    gate.admit(reply)
    waiting = gate.wait_for_turn(reply)
    told.append(next(waiting))
    assert told == [2]  # the running reply and the running label
    assert gate.ahead_of(reply) == 2
    running_label.cancel()
    told.append(next(waiting))
    assert told == [2, 1]
    running_reply.cancel()
    assert list(waiting) == []  # ended: the reply holds the model
    assert gate.busy and gate.ahead_of(reply) is None and gate.waiting == 0
    gate.release(reply)
    assert not gate.busy and gate.waiting == 1  # released, still admitted for its next turn
    gate.leave(reply)
    assert gate.waiting == 0


def test_a_label_asking_counts_only_the_label_before_it():
    gate = ModelGate(max_waiting=4)
    hold_model(gate)  # a reply
    running_label, label = hold_model(gate, quick=True), Job()
    gate.admit(label)
    waiting = gate.wait_for_turn(label, quick=True)
    assert next(waiting) == 1  # the running label; the running reply lets it in between tokens
    running_label.cancel()
    assert list(waiting) == []
    gate.leave(label)


def test_the_line_is_bounded_and_a_full_line_says_busy():
    gate = ModelGate(max_waiting=1)
    holder, waiter = hold_model(gate), Job()
    gate.admit(waiter)
    with pytest.raises(Busy, match=BUSY_MESSAGE):
        gate.admit(Job())
    assert gate.waiting == 1
    waiter.cancel()
    gate.admit(Job())  # a place is free again
    holder.cancel()


def test_cancelling_a_waiting_job_removes_it_from_the_line():
    gate = ModelGate(max_waiting=2)
    holder, waiter, outcome = hold_model(gate), Job(), []
    gate.admit(waiter)

    def wait():
        try:
            with gate.turn(waiter):
                outcome.append("ran")
        except Cancelled:
            outcome.append("cancelled")

    thread = threading.Thread(target=wait)
    thread.start()
    wait_until(lambda: gate.ahead_of(waiter) == 1, what="the waiter to ask")
    waiter.cancel()
    thread.join(10)
    assert outcome == ["cancelled"]
    assert gate.waiting == 0 and gate.busy  # the holder still holds it
    holder.cancel()
    assert not gate.busy


def test_a_job_cancelled_before_it_is_admitted_leaves_no_place_taken():
    gate = ModelGate(max_waiting=1)
    job = Job()
    job.cancel()  # e.g. Stop came first
    gate.admit(job)
    assert gate.waiting == 0
    with pytest.raises(Cancelled):
        with gate.turn(job):
            pass


def test_cancelling_the_holder_hands_the_model_on_at_once():
    gate = ModelGate(max_waiting=2)
    holder, order = hold_model(gate), []
    thread = start(gate, "next", order)
    holder.cancel()  # e.g. a client gone while its reply streams
    thread.join(10)
    assert order == ["next"]


def test_job_cancel_stops_its_attached_stream():
    engine = FakeEngine(gate=threading.Event())
    job = Job()
    stream = job.attach(engine.chat(engine.prepare("你好", mode="chat")))
    assert next(stream) == "回复"
    job.cancel()
    assert list(stream) == []
    assert stream.finish_reason == "cancelled" and engine.generations_cancelled == 1


@pytest.mark.parametrize("text, mode, label, reply", [
    ("这部电影太差了", Mode.BOTH, LABELS[1], "回复：这部电影太差了"),
    ("这部电影太差了", Mode.EMOTION, LABELS[1], None),
    ("这部电影太差了", Mode.CHAT, None, "回复：这部电影太差了"),
    ("#CHAT# 你好", Mode.EMOTION, None, "回复：你好"),  # the typed tag wins
])
def test_run_gives_the_label_then_the_reply_and_leaves_the_line(text, mode, label, reply):
    engine = FakeEngine()
    service = ModelService(engine, 4)
    answer = service.answer(service.prepare(text, mode=mode), Job())
    assert (answer.sentiment and answer.sentiment.label) == label
    assert (answer.stream and answer.stream.text) == reply
    assert answer.model_ms is not None
    assert service.gate.waiting == 0 and not service.gate.busy


def test_run_admits_before_its_first_step_and_a_cancelled_run_raises_cancelled():
    service = ModelService(FakeEngine(reply_pieces=["一", "二"]), 1)
    holder, job = hold_model(service.gate), Job()
    steps = service.run(service.prepare("你好", mode="chat"), job)  # admitted, not yet started
    with pytest.raises(Busy):
        service.run(service.prepare("你好", mode="chat"), Job())
    job.cancel()
    with pytest.raises(Cancelled):
        next(steps)
    assert service.gate.waiting == 0
    holder.cancel()
