"""Messages to token ids through the tokenizer's chat template, with contents kept as plain text."""

from __future__ import annotations

import threading
import uuid
from typing import Sequence

from .errors import ModelCompatibilityError


def encode_pieces(tokenizer, messages: Sequence[dict], add_generation_prompt: bool,
                  contents: Sequence[Sequence[int] | None] | None = None) -> list[list[int]]:
    """Token ids as [template, content 0, template, content 1, ..., template].

    The template is rendered with a placeholder for each content, so only template text can become
    special tokens; each content is encoded with special tokens split, so a user who types
    "<|im_end|>" gets those characters, not the end of their turn. `contents` may hold a message's
    ids already encoded that way (None: encode it here), so no text is tokenized twice.
    """
    marker = f"\x00slot-{uuid.uuid4().hex}-"
    placeholders = [f"{marker}{i}\x00" for i in range(len(messages))]
    rendered = tokenizer.apply_chat_template(
        [{"role": m["role"], "content": p} for m, p in zip(messages, placeholders)],
        tokenize=False, add_generation_prompt=add_generation_prompt)
    pieces: list[list[int]] = []
    rest = rendered
    for i, (message, placeholder) in enumerate(zip(messages, placeholders)):
        before, found, rest = rest.partition(placeholder)
        if not found:
            raise ModelCompatibilityError("the tokenizer's chat template does not place each message's content once")
        pieces.append(_encode(tokenizer, before, split_special=False))
        known = None if contents is None else contents[i]
        pieces.append(list(known) if known is not None else _encode(tokenizer, message["content"], split_special=True))
    pieces.append(_encode(tokenizer, rest, split_special=False))
    return pieces


def encode_messages(tokenizer, messages: Sequence[dict], add_generation_prompt: bool = True,
                    contents: Sequence[Sequence[int] | None] | None = None) -> list[int]:
    """Token ids of the whole conversation (see encode_pieces)."""
    return [i for piece in encode_pieces(tokenizer, messages, add_generation_prompt, contents) for i in piece]


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of user text, with any special-token spelling kept as plain text."""
    return _encode(tokenizer, text, split_special=True)


# transformers switches split_special_tokens by setting a flag on the tokenizer's shared Rust backend
# for each call, so two threads encoding at once could each get the other's setting: a template's
# "<|im_start|>" split into plain characters, or a user's typed marker read as a special token.
_ENCODE_LOCK = threading.Lock()


def _encode(tokenizer, text: str, split_special: bool) -> list[int]:
    if not text:
        return []
    with _ENCODE_LOCK:
        return tokenizer(text, add_special_tokens=False, split_special_tokens=split_special)["input_ids"]
