"""Sentiment by answer scoring: the quoted review read once on a cached prefix; short questions after it."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from .calibration import ESTIMATORS, BiasCache
from .chat_format import encode_pieces, encode_text
from .errors import ModelCompatibilityError
from .packing import head_rows
from .prompts import LABELS, Question, SentimentPrompt


# Reviews per batched forward while calibrating: length-sorted, so little of a batch is padding.
CALIBRATION_ROWS = 16


@dataclass(frozen=True)
class Sentiment:
    """A label from LABELS, its probability, whether it is too close to call, and the model's time."""

    label: str
    confidence: float
    latency_ms: float
    scores: dict[str, float]
    uncertain: bool = False


class SentimentScorer:
    """Scores a prompt's answer words after [system, our words, fenced review, a question] in the chat template.

    Everything before the review is run once here and its KV cache copied for each request. The review is
    read once; each question after it (a few tokens: closing fence, question, assistant turn, our opening
    words) is a row of one small batched forward on the review's cache, so k questions cost the review's
    tokens once plus k short suffixes. Each question gives the log-odds of LABELS[0] over LABELS[1]
    (answer words summed per label), minus its bias (prompt.calibration, measured here at load); the
    label comes from the mean over questions.
    """

    def __init__(self, model, tokenizer, prompt: SentimentPrompt, calibrate: bool = True,
                 cache: BiasCache | None = None):
        self.model = model
        self.prompt = prompt
        self.labels = LABELS
        self.prefix_ids, self.suffixes = _frame(tokenizer, prompt)
        # Per question: the answer tokens (all labels' words, in order) and which label each belongs to.
        self.answer_ids: list[list[int]] = []
        self.answer_label: list[list[int]] = []
        for question in prompt.questions:
            ids, owners = [], []
            for k, label in enumerate(LABELS):
                for word in question.answers[label]:
                    ids.append(answer_token_id(tokenizer, question, word))
                    owners.append(k)
            if len(set(ids)) != len(ids):
                raise ModelCompatibilityError(
                    f"answer words {question.answers} share a first token in this tokenizer; they cannot be scored apart")
            self.answer_ids.append(ids)
            self.answer_label.append(owners)
        # Only the answer words' rows of the output head are ever needed: a few rows instead of the whole
        # vocabulary saves reading the head's weights (vocab x hidden, ~0.5 GB) per request.
        head = model.get_output_embeddings()
        all_ids = [i for ids in self.answer_ids for i in ids]
        self._head = head_rows(head, all_ids)
        self._head_bias = None if head.bias is None else head.bias[all_ids].detach().clone()
        with torch.inference_mode():
            out = model.base_model(input_ids=torch.tensor([self.prefix_ids]), use_cache=True)
        self._prefix_cache = out.past_key_values
        self.tokenizer = tokenizer
        # Each question's lean, subtracted from its log-odds (prompt.calibration; pipeline/calibration.py).
        self.bias = torch.zeros(len(prompt.questions))
        self.calibration_log_odds: torch.Tensor | None = None  # raw, on prompt.calibration_reviews, when computed
        self.bias_source = "none"  # for the load log: computed here, read from a cache file, or content-free
        if calibrate and prompt.calibration == "content_free":
            self.bias, self.bias_source = self.content_free_bias(), "content-free inputs"
        elif calibrate and prompt.calibration != "none":
            if prompt.calibration not in ESTIMATORS:
                raise ValueError(f"unknown calibration {prompt.calibration!r}: content_free, none or one of {list(ESTIMATORS)}")
            self.bias = self.review_bias(cache)

    def review_bias(self, cache: BiasCache | None) -> torch.Tensor:
        """The prompt's estimator on its calibration reviews, from the cache when this checkpoint and prompt
        were calibrated before, else computed (and kept there)."""
        texts, labels = zip(*self.prompt.calibration_reviews)
        ids = [encode_text(self.tokenizer, self.quote(text)) for text in texts]
        estimator = ESTIMATORS[self.prompt.calibration]
        # The estimator's own code too: an edited estimator must not read a bias the old one left.
        key = cache and cache.key(self.prefix_ids, self.suffixes, self.answer_ids, ids, labels, self.prompt.calibration,
                                  estimator.__code__.co_code.hex())
        found = cache and cache.get(key)
        if found:
            self.bias_source = f"read from {found[1]}"
            return torch.tensor(found[0])
        started = time.perf_counter()
        self.calibration_log_odds = self.ids_log_odds(ids)
        bias = estimator(self.calibration_log_odds, labels, LABELS[0])
        seconds = time.perf_counter() - started
        kept = cache and cache.put(key, {"bias": bias.tolist(), "estimator": self.prompt.calibration,
                                         "reviews": len(ids), "seconds": round(seconds, 1)})
        self.bias_source = f"computed over {len(ids)} reviews in {seconds:.1f} s" + (f", kept in {kept}" if kept else "")
        return bias

    def content_free_bias(self) -> torch.Tensor:
        """Each question's mean log-odds on the prompt's content-free inputs (Zhao et al., 2021)."""
        if not self.prompt.calibration_texts:
            return torch.zeros(len(self.prompt.questions))
        return torch.stack([self.question_log_odds(encode_text(self.tokenizer, self.quote(text)))
                            for text in self.prompt.calibration_texts]).mean(0)

    def reviews_log_odds(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw log-odds (texts, questions) of reviews as they would be quoted."""
        return self.ids_log_odds([encode_text(self.tokenizer, self.quote(text)) for text in texts])

    def ids_log_odds(self, ids: Sequence[Sequence[int]], rows: int = CALIBRATION_ROWS) -> torch.Tensor:
        """Raw log-odds (reviews, questions) of quoted reviews' ids, in batched forwards of similar lengths."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.zeros(len(ids), len(self.prompt.questions))
        for start in range(0, len(order), rows):
            part = order[start:start + rows]
            out[part] = self.batch_log_odds([ids[i] for i in part])
        return out

    def quote(self, text: str) -> str:
        """The review as it goes inside the fence (see SentimentPrompt.quote)."""
        return self.prompt.quote(text)

    @property
    def suffix_tokens(self) -> int:
        """Tokens run after the review per request, over all questions."""
        return sum(len(s) for s in self.suffixes)

    def question_log_odds(self, text_ids: Sequence[int], use_prefix_cache: bool = True) -> torch.Tensor:
        """Log-odds of LABELS[0] over LABELS[1] per question, after the quoted review's token ids."""
        with torch.inference_mode():
            if len(self.suffixes) == 1:
                hidden = self._last_hidden_single(list(text_ids), use_prefix_cache)
            else:
                hidden = self._last_hidden_batched(list(text_ids), use_prefix_cache)
            logits = torch.nn.functional.linear(hidden, self._head, self._head_bias).float()
        return self._log_odds(logits)

    def _log_odds(self, logits: torch.Tensor) -> torch.Tensor:
        """Per question: log P(LABELS[0]'s words) - log P(LABELS[1]'s), from its row of answer-word logits."""
        out, start = [], 0
        for q, (ids, owners) in enumerate(zip(self.answer_ids, self.answer_label)):
            row = torch.log_softmax(logits[q, start:start + len(ids)], -1)
            start += len(ids)
            per_label = [torch.logsumexp(row[[j for j, o in enumerate(owners) if o == k]], 0) for k in range(len(LABELS))]
            out.append(per_label[0] - per_label[1])
        return torch.stack(out)

    def batch_log_odds(self, texts_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """question_log_odds for several reviews in one forward: a (reviews, questions) tensor.

        Each review is a row on its own copy of the prefix cache, right-padded to the longest; the
        attention mask hides the padding from later tokens and the position ids continue from each
        row's own last real token, so every row computes what it would alone (within float rounding).
        """
        rows = [list(ids) for ids in texts_ids]
        with torch.inference_mode():
            cache = copy.deepcopy(self._prefix_cache)
            cache.batch_repeat_interleave(len(rows))
            past = torch.ones(len(rows), len(self.prefix_ids), dtype=torch.long)
            q = len(self.suffixes)
            if q == 1:  # one question: the review and its suffix in one forward
                hidden, _ = self._padded_forward([r + self.suffixes[0] for r in rows], cache, past)
            else:  # the reviews, then each review's questions as rows on its cache
                _, past = self._padded_forward(rows, cache, past)
                cache.batch_repeat_interleave(q)
                hidden, _ = self._padded_forward([s for _ in rows for s in self.suffixes], cache,
                                                 past.repeat_interleave(q, 0))
            hidden = hidden.view(len(rows), q, -1)
            logits = torch.nn.functional.linear(hidden, self._head, self._head_bias).float()
        return torch.stack([self._log_odds(row) for row in logits])

    def _padded_forward(self, rows: list[list[int]], cache, past_mask: torch.Tensor):
        """Run right-padded rows after a batched cache; (each row's last real hidden state, the new mask)."""
        lengths = torch.tensor([len(r) for r in rows])
        width = max(1, int(lengths.max()))
        ids = torch.tensor([r + [r[-1] if r else 0] * (width - len(r)) for r in rows])
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        positions = past_mask.sum(1, keepdim=True) + torch.arange(width)[None, :]
        full_mask = torch.cat([past_mask, mask], 1)
        out = self.model.base_model(input_ids=ids, attention_mask=full_mask, position_ids=positions,
                                    past_key_values=cache, use_cache=True)
        last = (lengths - 1).clamp(min=0)
        return out.last_hidden_state[torch.arange(len(rows)), last], full_mask

    def _last_hidden_single(self, text_ids: list[int], use_prefix_cache: bool) -> torch.Tensor:
        body = text_ids + self.suffixes[0]
        if use_prefix_cache:
            # The cache object grows in place during a forward, so each request gets its own copy.
            out = self.model.base_model(input_ids=torch.tensor([body]),
                                        past_key_values=copy.deepcopy(self._prefix_cache), use_cache=True)
        else:
            out = self.model.base_model(input_ids=torch.tensor([self.prefix_ids + body]), use_cache=False)
        return out.last_hidden_state[0, -1:].expand(len(self.answer_ids), -1)

    def _last_hidden_batched(self, text_ids: list[int], use_prefix_cache: bool) -> torch.Tensor:
        if use_prefix_cache:
            cache = copy.deepcopy(self._prefix_cache)
            if text_ids:
                self.model.base_model(input_ids=torch.tensor([text_ids]), past_key_values=cache, use_cache=True)
        else:
            cache = self.model.base_model(input_ids=torch.tensor([self.prefix_ids + text_ids]),
                                          use_cache=True).past_key_values
        cache.batch_repeat_interleave(len(self.suffixes))
        # Suffixes of different lengths are right-padded: attention is causal, so padding after a row's
        # last real token cannot change it, and positions continue from the cache as they should.
        width = max(len(s) for s in self.suffixes)
        batch = torch.tensor([s + [s[-1]] * (width - len(s)) for s in self.suffixes])
        out = self.model.base_model(input_ids=batch, past_key_values=cache, use_cache=True)
        last = torch.tensor([len(s) - 1 for s in self.suffixes])
        return out.last_hidden_state[torch.arange(len(self.suffixes)), last]

    def parse(self, log_odds: torch.Tensor, latency_ms: float) -> Sentiment:
        """The label from the mean calibrated log-odds; confidence is the label's probability."""
        p_first = first_label_probability(log_odds.tolist(), self.bias.tolist())
        probs = (p_first, 1.0 - p_first)
        best = 0 if p_first >= 0.5 else 1
        return Sentiment(self.labels[best], probs[best], latency_ms, dict(zip(self.labels, probs)),
                         uncertain=probs[best] < self.prompt.uncertain_below)


def first_label_probability(log_odds: Sequence[float], bias: Sequence[float], temperature: float = 1.0) -> float:
    """P(LABELS[0]): the sigmoid of the questions' mean calibrated log-odds (0.5 and above picks LABELS[0])."""
    margin = sum(x - b for x, b in zip(log_odds, bias)) / len(log_odds) / temperature
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, margin))))


def _frame(tokenizer, prompt: SentimentPrompt) -> tuple[list[int], list[list[int]]]:
    """(prefix ids up to the opening fence, one suffix of ids per question) through the chat template."""
    first = prompt.questions[0]
    messages = [{"role": "system", "content": prompt.system}]
    for review, label in prompt.examples:
        messages += [{"role": "user", "content": prompt.before_text + prompt.fence[0] + prompt.quote(review)
                      + prompt.fence[1] + first.after_text},
                     {"role": "assistant", "content": first.answer_prefix + first.answers[label][0]}]
    messages.append({"role": "user", "content": ""})
    pieces = encode_pieces(tokenizer, messages, add_generation_prompt=True)
    # pieces: [template, system, template, (example turns, template)..., user content (empty), template + assistant turn]
    prefix = [i for piece in pieces[:-2] for i in piece] + encode_text(tokenizer, prompt.before_text + prompt.fence[0])
    suffixes = [encode_text(tokenizer, prompt.fence[1] + q.after_text) + pieces[-1] + encode_text(tokenizer, q.answer_prefix)
                for q in prompt.questions]
    return prefix, suffixes


def answer_token_id(tokenizer, question: Question, word: str) -> int:
    """The first token of an answer word as the assistant would write it after the question's opening words."""
    opening = encode_text(tokenizer, question.answer_prefix)
    ids = encode_text(tokenizer, question.answer_prefix + word)
    if ids[:len(opening)] == opening and len(ids) > len(opening):
        return ids[len(opening)]
    ids = encode_text(tokenizer, word)  # the word merged with the opening: score it as written alone
    if not ids:
        raise ModelCompatibilityError(f"the tokenizer encodes answer {word!r} as nothing")
    return ids[0]
