"""Sentiment by label scoring: one forward pass over the user's tokens on a cached prompt prefix."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch

from .chat_format import encode_pieces
from .errors import WeightsNotFoundError
from .prompts import LABELS


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
                 labels: Sequence[str] = LABELS):
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
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([self.prefix_ids]), use_cache=True)
        self._prefix_cache = out.past_key_values

    def label_logits(self, text_ids: Sequence[int], use_prefix_cache: bool = True) -> torch.Tensor:
        """Next-token logits of each label after the user's text (one forward, last position only)."""
        body = list(text_ids) + self.suffix_ids
        with torch.inference_mode():
            if use_prefix_cache:
                # The cache object grows in place during a forward, so each request gets its own copy.
                out = self.model(
                    input_ids=torch.tensor([body]), past_key_values=copy.deepcopy(self._prefix_cache),
                    use_cache=True, logits_to_keep=1)
            else:
                out = self.model(input_ids=torch.tensor([self.prefix_ids + body]), use_cache=False, logits_to_keep=1)
        return out.logits[0, -1, self.label_token_ids].float()

    def parse(self, logits: torch.Tensor, latency_ms: float) -> Sentiment:
        """The label with the highest score; confidence is its softmax probability among the labels."""
        probs = torch.softmax(logits, dim=-1).tolist()
        best = max(range(len(self.labels)), key=probs.__getitem__)
        return Sentiment(self.labels[best], probs[best], latency_ms, dict(zip(self.labels, probs)))


def label_token_id(tokenizer, label: str) -> int:
    """The first token of a label as the assistant would start its answer with it."""
    ids = tokenizer(label, add_special_tokens=False)["input_ids"]
    if not ids:
        raise WeightsNotFoundError(f"the tokenizer encodes label {label!r} as nothing")
    return ids[0]
