"""The model's one line (gate.py): admission, order, quick jobs first, cancel; and ModelService.run."""

from __future__ import annotations

import threading

import pytest

from gate import BUSY_MESSAGE, Busy, Cancelled, Job, ModelGate, ModelService
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


def test_a_quick_job_goes_before_waiting_replies_but_never_stops_a_running_one():
    gate = ModelGate(max_waiting=4)
    holder, order = hold_model(gate), []
    threads = [start(gate, "reply 1", order), start(gate, "reply 2", order), start(gate, "label", order, quick=True)]
    assert order == []  # the label waits for the reply that holds the model
    holder.cancel()
    for thread in threads:
        thread.join(10)
    assert order == ["label", "reply 1", "reply 2"]


def test_ahead_of_counts_the_holder_and_whoever_goes_first():
    gate = ModelGate(max_waiting=4)
    holder, order = hold_model(gate), []
    start(gate, "reply", order)
    label = Job()
    gate.admit(label)
    threading.Thread(target=lambda: gate._acquire(label, quick=True), daemon=True).start()
    wait_until(lambda: gate.ahead_of(label) is not None, what="the label to ask")
    assert gate.ahead_of(label) == 1  # only the holder: the label goes before the waiting reply
    holder.cancel()
    wait_until(lambda: gate.busy and gate.ahead_of(label) is None, what="the label to take the model")
    label.cancel()


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
