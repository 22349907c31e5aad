"""The model's lock with a fast lane (pipeline.model_lock) and the loop check (pipeline.chat): the
rules alone, then on the tiny model: a label runs between a reply's tokens, a looping reply ends."""

from __future__ import annotations

import threading

import pytest

from pipeline.chat import repeating_period
from pipeline.model_lock import ModelLock
from tests.served import PacedModel, wait_until


def test_a_short_call_goes_before_a_long_one_that_waits():
    lock, order = ModelLock(), []
    holding = lock.hold()
    holding.__enter__()

    def call(name, short):
        with lock.hold(short=short):
            order.append(name)

    long_call = threading.Thread(target=call, args=("long", False))
    long_call.start()
    short_call = threading.Thread(target=call, args=("short", True))
    short_call.start()
    wait_until(lambda: lock.waiting == 2, what="both calls to wait")
    holding.__exit__(None, None, None)
    long_call.join(10), short_call.join(10)
    assert order == ["short", "long"]


def test_a_holder_lets_short_calls_in_and_gets_the_model_back_before_long_callers():
    # Who wakes first after the short call is up to the scheduler: repeated, a wrong order would show.
    for _ in range(100):
        lock, order = ModelLock(), []
        holding = lock.hold()
        holding.__enter__()
        lock.let_short_calls_in()  # nobody waits: a no-op
        assert lock.handovers == 0

        def call(name, short, lock=lock, order=order):
            with lock.hold(short=short):
                order.append(name)

        threads = [threading.Thread(target=call, args=("short", True)), threading.Thread(target=call, args=("long", False))]
        threads[0].start()
        wait_until(lambda: lock.waiting == 1, what="the short call to wait")  # noqa: B023 - in this iteration
        threads[1].start()
        wait_until(lambda: lock.waiting == 2, what="the long call to wait")  # noqa: B023 - in this iteration
        lock.let_short_calls_in()  # returns once the short call ran, holding the model again
        order.append("holder resumed")
        assert lock.handovers == 1
        holding.__exit__(None, None, None)
        threads[1].join(10)
        assert order == ["short", "holder resumed", "long"]


def test_a_steady_stream_of_short_calls_slows_a_generation_but_cannot_stop_it():
    lock, done, served = ModelLock(), threading.Event(), []

    def labels():
        while not done.is_set():
            with lock.hold(short=True):
                served.append(1)
                done.wait(0.002)  # a label's work: meanwhile the other senders are waiting again

    holding, tokens = threading.Event(), []

    def generation():
        with lock.hold():
            holding.set()
            while len(served) < 10:  # the labels queue up meanwhile
                lock.let_short_calls_in()
            for _ in range(50):  # then 50 more tokens, a pause after each
                tokens.append(1)
                lock.let_short_calls_in()

    reply = threading.Thread(target=generation, daemon=True)
    reply.start()
    holding.wait(10)
    senders = [threading.Thread(target=labels, daemon=True) for _ in range(3)]
    for thread in senders:
        thread.start()
    reply.join(30)
    finished = not reply.is_alive()
    done.set()
    for thread in senders:
        thread.join(10)
    assert finished and len(tokens) == 50  # each pause let in only the labels waiting then; the reply went on
    assert lock.handovers > 0 and lock.waiting == 0


@pytest.mark.parametrize("tokens, period", [
    ([1] * 48, 1),
    ([1] * 47, None),  # under the 48 tokens a loop must cover
    ([1, 2, 3] * 16, 3),
    ([9] * 5 + [1, 2, 3, 4, 5] * 10, 5),
    (list(range(100)), None),
    (list(range(20)) * 3, None),  # a long phrase needs 4 copies in a row
    (list(range(20)) * 4, 20),
    ([1, 2, 3] * 15 + [4, 5, 6], None),  # it must be the newest tokens that repeat
])
def test_repeating_period(tokens, period):
    assert repeating_period(tokens, min_tokens=48) == period


def _reply(engine, message):
    return engine.chat(engine.prepare(message, mode="chat"))


def test_a_label_runs_between_the_tokens_of_a_running_reply_and_changes_nothing_in_it(tiny_engine_with):
    engine = tiny_engine_with(chat_max_new_tokens=120, do_sample=False, chat_stop_loop_tokens=0)
    expected = engine.classify("物流很快，很满意")
    with PacedModel(engine, per_token_s=0.01) as paced:
        alone = "".join(_reply(engine, "讲个故事"))
        paced.forwards = 0
        stream = _reply(engine, "讲个故事")
        first = next(stream)
        handovers = engine._lock.handovers
        label = engine.classify("物流很快，很满意")
        forwards_at_label = paced.forwards
        text = first + "".join(stream)
    assert forwards_at_label < 1 + 120  # the label came back while the reply still had tokens to go
    assert engine._lock.handovers == handovers + 1  # it ran between two of them
    assert text == alone  # and the reply is the same, token for token
    assert (label.label, label.confidence) == (expected.label, pytest.approx(expected.confidence, abs=1e-5))


class ScriptedModel:
    """Makes the model generate `script` token after token (then its last token forever), whatever it would say."""

    def __init__(self, engine, script: list[int]):
        self.model, self.script, self.step = engine.model, script, 0

    def _after(self, module, args, kwargs, output):
        token = self.script[min(self.step, len(self.script) - 1)]
        self.step += 1
        output.logits[..., -1, :] = float("-inf")
        output.logits[..., -1, token] = 0.0
        return output

    def __enter__(self):
        self._hook = self.model.register_forward_hook(self._after, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self._hook.remove()


def test_a_reply_that_repeats_one_phrase_is_ended_and_says_so(tiny_engine_with):
    looping_stops = tiny_engine_with(chat_max_new_tokens=200, do_sample=False)  # stops after 48 looping tokens
    never_stops = tiny_engine_with(chat_max_new_tokens=200, do_sample=False, chat_stop_loop_tokens=0)
    words = list(range(100, 110))  # ten different tokens, then one phrase of five over and over
    phrase = list(range(200, 205))
    script = words + phrase * 100
    for engine, reason, tokens in ((looping_stops, "loop", 10 + 48), (never_stops, "length", 200)):
        with ScriptedModel(engine, script):
            stream = _reply(engine, "你好")
            "".join(stream)
        assert (stream.finish_reason, stream.new_tokens) == (reason, tokens)
