"""The model's one line (app/gate.py): admission, order, quick jobs beside a reply, waiting counts, cancel; ModelService.run."""

from __future__ import annotations

import threading

import pytest

from app.gate import BUSY_MESSAGE, Busy, Cancelled, Job, ModelGate
from app.service import ModelService
from pipeline import LABELS, Mode
from tests.fakes import FakeEngine
from tests.served import Consumer, hold_model, wait_until


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


# -- the bounded fast lane and the per-client cap (issue #26) ------------------------------------------

def line_up(gate: ModelGate, order: list, labels: int, reply_after: int = 0) -> list[threading.Thread]:
    """Labels (and one reply, after reply_after of them) asking in that admission order, each recording its turn."""
    threads = []
    for n in range(labels + 1):
        if n == reply_after:
            threads.append(start(gate, "reply", order))
        if n < labels:
            threads.append(start(gate, f"label {n}", order, quick=True))
    return threads


def turns_after_a_held_label(gate: ModelGate, labels: int) -> list[str]:
    """line_up's labels and reply behind a label holding the model, then released: who got the model, in order."""
    holder, order = hold_model(gate, quick=True), []
    threads = line_up(gate, order, labels=labels)
    holder.cancel()
    for thread in threads:
        thread.join(10)
    return order


@pytest.mark.parametrize("passes, labels_first", [(3, 3), (0, 0), (None, 6)])
def test_a_waiting_reply_is_passed_by_at_most_max_label_passes_labels(passes, labels_first):
    """None is the unbounded fast lane: every label that asks goes first."""
    gate = ModelGate(max_waiting=10, max_label_passes=passes, max_label_pass_ms=None)
    order = turns_after_a_held_label(gate, labels=6)
    assert order.index("reply") == labels_first
    assert order == [f"label {n}" for n in range(labels_first)] + ["reply"] + [
        f"label {n}" for n in range(labels_first, 6)]


def test_a_reply_is_due_after_max_label_pass_ms_of_label_work():
    """Each label holds the model for 30 ms of the gate's clock, so the fourth brings 100 ms to 120."""
    ticks = iter(range(0, 10_000, 30))  # each reading advances 30 ms: the gate reads it as a label starts and ends
    gate = ModelGate(max_waiting=10, max_label_passes=None, max_label_pass_ms=100, clock=lambda: next(ticks) / 1000)
    assert turns_after_a_held_label(gate, labels=6).index("reply") == 4


def test_under_a_steady_flood_of_labels_a_reply_starts_after_at_most_k_labels():
    """Four clients keep asking for labels (a bounded number, so the test ends); the flood outlives the reply's start."""
    k, order, lock = 3, [], threading.Lock()
    gate = ModelGate(max_waiting=10, max_label_passes=k, max_label_pass_ms=None)
    holder = hold_model(gate, quick=True)
    reply = start(gate, "reply", order)

    def flood():
        for _ in range(50):
            job = Job()
            gate.admit(job)
            with gate.turn(job, quick=True), lock:
                order.append("label")
            gate.leave(job)

    flooders = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
    for thread in flooders:
        thread.start()
    wait_until(lambda: gate.labels_asking == 4, what="the flood to ask")
    holder.cancel()
    reply.join(10)
    for thread in flooders:
        thread.join(30)
    assert len(order) == 201
    assert 1 <= order.index("reply") <= k
    assert order[order.index("reply") + 1:].count("label") > 0  # the flood still ran after the reply started


def test_a_due_reply_keeps_labels_out_until_its_first_token_then_lets_them_in_between_tokens():
    gate = ModelGate(max_waiting=10, max_label_passes=1, max_label_pass_ms=None)
    holder, order = hold_model(gate, quick=True), []
    reply = Job()
    gate.admit(reply)
    waiting = gate.wait_for_turn(reply)
    assert next(waiting) == 1  # the running label
    labels = [start(gate, f"label {n}", order, quick=True) for n in range(2)]
    holder.cancel()
    labels[0].join(10)
    assert list(waiting) == []  # label 0 passed it: due, it holds the model
    later = Job()
    gate.admit(later)
    assert gate.ahead_of(later) is None and gate.passes(reply) == 1
    assert order == ["label 0"] and labels[1].is_alive()  # the prefill goes before the labels still asking
    gate.started(reply)  # its first token: labels run between its tokens again
    labels[1].join(10)
    assert order == ["label 0", "label 1"] and gate.busy
    gate.release(reply)
    gate.leave(reply)


def test_labels_between_a_streaming_replys_tokens_do_not_pass_the_reply_waiting_behind_it():
    gate = ModelGate(max_waiting=10, max_label_passes=1, max_label_pass_ms=None)
    streaming = hold_model(gate)
    gate.started(streaming)
    order = []
    reply = start(gate, "reply", order)
    waiting_reply = next(iter(gate._asking))
    for n in range(3):  # each goes at once, beside the streaming reply
        label = threading.Thread(target=lambda n=n: (gate.admit(job := Job()), _take_and_leave(gate, job, order, n)))
        label.start()
        label.join(10)
    assert order == [0, 1, 2] and gate.passes(waiting_reply) == 0
    streaming.cancel()
    reply.join(10)
    assert order[-1] == "reply"


def test_one_client_flooding_gets_busy_while_another_clients_label_gets_through():
    gate = ModelGate(max_waiting=8, max_per_client=2)
    holder, order = hold_model(gate), []
    flood = [Job("ip:10.0.0.1"), Job("ip:10.0.0.1")]
    for job in flood:
        gate.admit(job)
    with pytest.raises(Busy, match=BUSY_MESSAGE):
        gate.admit(Job("ip:10.0.0.1"))  # a third from the same client
    other = Job("ip:10.0.0.2")
    gate.admit(other)
    gate.admit(Job())  # no client: counted only in the whole line
    assert gate.waiting == 4

    def label():
        with gate.turn(other, quick=True):
            order.append("other")

    thread = threading.Thread(target=label)
    thread.start()
    thread.join(10)
    assert order == ["other"]  # the flood's refusals took no one's place
    for job in flood:
        job.cancel()
    gate.admit(Job("ip:10.0.0.1"))  # its jobs gone, the client may send again
    holder.cancel()


def test_a_clients_job_holding_the_model_does_not_count_as_waiting():
    gate = ModelGate(max_waiting=8, max_per_client=1)
    holding = Job("session:a")
    gate.admit(holding)
    for _ in gate.wait_for_turn(holding):
        pass
    gate.admit(Job("session:a"))  # its one waiting job; the holder is not waiting
    with pytest.raises(Busy):
        gate.admit(Job("session:a"))
    gate.leave(holding)


@pytest.mark.parametrize("setting", [{"max_label_passes": -1}, {"max_label_pass_ms": -1}, {"max_per_client": 0}])
def test_fairness_settings_are_checked(setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        ModelGate(max_waiting=4, **setting)


def test_run_lets_labels_back_in_at_the_replys_first_piece():
    """ModelService.run tells the gate when the reply started, so a due reply does not keep labels out to its end."""
    pieces = threading.Event()
    service = ModelService(FakeEngine(gate=pieces, reply_pieces=["一", "二"]), 8, max_label_passes=0)
    job = Job()
    steps = service.run(service.prepare("你好", mode="chat"), job)
    answer = next(steps)  # the first piece; the second waits for `pieces`
    assert answer.stream.text == "一" and service.gate.busy
    label = Consumer(service.run(service.prepare("很好", mode="emotion"), Job()))
    label.start()
    wait_until(lambda: label.updates, what="the label, not kept out by the due reply")  # the reply still runs
    assert label.updates[-1].sentiment is not None
    pieces.set()
    assert [a.stream.text for a in steps][-1] == "一二"
