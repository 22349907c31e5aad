"""Sentiment by label scoring: one forward pass over the user's tokens on a cached prompt prefix."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch

from .chat_format import encode_pieces, encode_text
from .errors import WeightsNotFoundError
from .packing import head_rows
from .prompts import CALIBRATION_TEXTS, LABELS


@dataclass(frozen=True)
class Sentiment:
    """A label from LABELS, its probability among the labels, and how long the model took."""

    label: str
    confidence: float
    latency_ms: float
    scores: dict[str, float]


class SentimentScorer:
    """Scores the labels' first tokens after [system prompt, user text] in the chat template.

    The prefix (everything before the user's text) is run once here and its KV cache copied for
    each request, so a request costs the user's tokens plus the few template tokens after them.
    """

    def __init__(self, model, tokenizer, system_prompt: str, examples: Sequence[tuple[str, str]] = (),
                 labels: Sequence[str] = LABELS, calibrate: bool = False):
        self.model = model
        self.labels = tuple(labels)
        messages = [{"role": "system", "content": system_prompt}]
        for text, label in examples:  # few-shot turns live in the cached prefix: free per request
            messages += [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
        messages.append({"role": "user", "content": ""})
        pieces = encode_pieces(tokenizer, messages, add_generation_prompt=True)
        # pieces: [template, content, template, content, ..., user text (empty here), template]
        self.prefix_ids = [i for piece in pieces[:-2] for i in piece]
        self.suffix_ids = pieces[-1]
        self.label_token_ids = [label_token_id(tokenizer, label) for label in self.labels]
        if len(set(self.label_token_ids)) != len(self.labels):
            raise WeightsNotFoundError(
                f"labels {self.labels} share a first token in this tokenizer; they cannot be scored apart")
        # Only the labels' rows of the output head are ever needed: scoring two rows instead of the
        # whole vocabulary saves reading the head's weights (vocab x hidden, ~0.5 GB) per request.
        head = model.get_output_embeddings()
        self._label_head = head_rows(head, self.label_token_ids)
        self._label_head_bias = None if head.bias is None else head.bias[self.label_token_ids].detach().clone()
        with torch.inference_mode():
            out = model.base_model(input_ids=torch.tensor([self.prefix_ids]), use_cache=True)
        self._prefix_cache = out.past_key_values
        # The label bias on content-free inputs, in log-probabilities; zero when not calibrating.
        self.bias = torch.zeros(len(self.labels))
        if calibrate:
            self.bias = torch.stack([
                torch.log_softmax(self.label_logits(encode_text(tokenizer, text)), -1) for text in CALIBRATION_TEXTS
            ]).mean(0)

    def label_logits(self, text_ids: Sequence[int], use_prefix_cache: bool = True) -> torch.Tensor:
        """Next-token logits of each label after the user's text (one forward, last position only)."""
        body = list(text_ids) + self.suffix_ids
        with torch.inference_mode():
            if use_prefix_cache:
                # The cache object grows in place during a forward, so each request gets its own copy.
                out = self.model.base_model(
                    input_ids=torch.tensor([body]), past_key_values=copy.deepcopy(self._prefix_cache), use_cache=True)
            else:
                out = self.model.base_model(input_ids=torch.tensor([self.prefix_ids + body]), use_cache=False)
            last_hidden = out.last_hidden_state[0, -1]
            logits = torch.nn.functional.linear(last_hidden, self._label_head, self._label_head_bias)
        return logits.float()

    def parse(self, logits: torch.Tensor, latency_ms: float) -> Sentiment:
        """The label with the highest calibrated score; confidence is its probability among the labels."""
        probs = torch.softmax(torch.log_softmax(logits, -1) - self.bias, dim=-1).tolist()
        best = max(range(len(self.labels)), key=probs.__getitem__)
        return Sentiment(self.labels[best], probs[best], latency_ms, dict(zip(self.labels, probs)))


def label_token_id(tokenizer, label: str) -> int:
    """The first token of a label as the assistant would start its answer with it."""
    ids = tokenizer(label, add_special_tokens=False)["input_ids"]
    if not ids:
        raise WeightsNotFoundError(f"the tokenizer encodes label {label!r} as nothing")
    return ids[0]
