"""Every prompt the model sees, as data: system prompts, the sentiment layout, labels and routing tags."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from .calibration import CALIBRATION_REVIEWS

# The two sentiment labels, in the order scores are reported.
LABELS = ("正面", "负面")

# Emoji shown beside each label in the UI.
LABEL_EMOJI = {"正面": "😄", "负面": "😞"}
# Emoji for a label too close to call (Sentiment.uncertain), shown as "😐 偏负面 58%".
UNCERTAIN_EMOJI = "😐"


@dataclass(frozen=True)
class Question:
    """One question asked after the fenced review: our words, our opening of the answer, the answer words."""

    after_text: str  # user-turn words after the closing fence
    answer_prefix: str  # the assistant's first words, ours: the next token is scored
    answers: dict[str, tuple[str, ...]]  # label -> words whose first tokens are summed for that label


# A bracketed aside, or a run of text up to and including its sentence end or line break.
_SEGMENT = re.compile(r"[（(【\[][^（()）【】\[\]\n]*[）)】\]]|[^（(【\[。！？!?；;\n]+[。！？!?；;\n]*|[（(【\[。！？!?；;\n]")


@dataclass(frozen=True)
class SentimentPrompt:
    """How a review reaches the model: system prompt, words before the fence, the fence, the questions after."""

    system: str
    before_text: str
    fence: tuple[str, str]
    questions: tuple[Question, ...]
    # Worked examples (review, label) shown as earlier turns in the same layout, answered by the first
    # question; they live in the cached prefix, so they cost nothing per request.
    examples: tuple[tuple[str, str], ...] = ()
    # Characters of the review replaced before it goes inside the fence, so it cannot close the fence.
    escape: dict[str, str] = field(default_factory=dict)
    # Words the review may not say to the model (any case), replaced by `redacted`: the answer words and
    # their spellings, so an instruction inside the review cannot hand the model the token to copy.
    redact: tuple[str, ...] = ()
    # Structure the review may not carry (regular expressions, any case): chat-template markers and role
    # labels, which would let it pose as another turn. Replaced by `redacted` too.
    redact_patterns: tuple[str, ...] = ()
    redacted: str = "某"
    # How each question's lean is measured at load and subtracted, so the same prompt works on another
    # checkpoint: "content_free" (its log-odds on calibration_texts, Zhao et al., 2021), a name from
    # pipeline.calibration.ESTIMATORS (read off calibration_reviews), or "none".
    calibration: str = "content_free"
    calibration_texts: tuple[str, ...] = ("N/A", "无", "[内容]")
    calibration_reviews: tuple[tuple[str, str], ...] = CALIBRATION_REVIEWS
    uncertain_below: float = 0.0  # a label whose confidence is under this is flagged uncertain

    # Drop each sentence, line or bracketed aside that names an answer word or carries chat structure,
    # instead of redacting the word alone: such a segment talks to the labeller, not about the product.
    drop_segments: bool = False

    def quote(self, text: str) -> str:
        """The review as it goes inside the fence: what talks to the labeller removed, fence characters escaped."""
        if self.drop_segments:
            structure_found = bool(self._structure.search(text))
            text = self._structure.sub("\n", text)  # structure becomes a line break: a segment boundary
            if self._answer_words.search(text):
                kept = [seg for seg in _SEGMENT.findall(text) if not self._answer_words.search(seg)]
                if "".join(kept).strip():  # a review that is all instruction keeps its words, redacted below
                    text = "".join(kept)
                structure_found = True
            if structure_found:
                text = re.sub(r"\n\s*\n", "\n", text)
        else:
            text = self._structure.sub(self.redacted, text)
        text = self._answer_words.sub(self.redacted, text)
        return text.translate(self._escape_table)

    @functools.cached_property
    def _escape_table(self) -> dict[int, str]:
        return str.maketrans(self.escape)

    @functools.cached_property
    def _structure(self) -> re.Pattern:
        return re.compile("|".join(self.redact_patterns) or r"(?!)", re.IGNORECASE | re.MULTILINE)

    @functools.cached_property
    def _answer_words(self) -> re.Pattern:
        # Spaces, punctuation or invisible characters between the letters do not hide a word.
        words = [r"[\W_]*".join(re.escape(ch) for ch in word) for word in sorted(self.redact, key=len, reverse=True)]
        return re.compile("|".join(words) or r"(?!)", re.IGNORECASE)


# The answer words in every spelling an instruction might use to hand them to the model.
ANSWER_WORDS = ("正面", "负面", "負面", "positive", "negative")
# Chat structure a review may not carry: template markers (and the role after one), and role labels
# opening a line, which would let it pose as another turn.
CHAT_STRUCTURE = (
    r"<\|[^|<>\n]{0,32}\|>([ \t]*(system|user|assistant)\b)?",
    r"^[ \t]*(system|user|assistant|human|ai|bot|系统|用户|助手)[ \t]*[:：]",
    r"^[ \t]*(system|user|assistant)[ \t]*$",
)

# The seed method that this product replaces (kept for benchmarks): generate a few tokens under
# a cold-analyst persona and read the label out of the text.
SEED_SYSTEM_PROMPT = "你是一个冷酷的情感分析师，只会输出“正面”或“负面”，不输出任何其他内容。"

# The sentiment layout (bench/README.md): the seed's own system prompt and the review as the user turn, the
# answer words scored right after it. Any sentence, line or bracketed aside of the review that names an
# answer word or carries chat structure is dropped before the model reads it (such a segment speaks to the
# labeller, not about the product), so an instruction planted in a review cannot hand the model the token
# to copy. A fence around the review (<评论> tags, and a system prompt saying that what is inside is data)
# held better on the attacks the layout was chosen on but worse on unseen ones, and pushed plain complaints
# toward 正面; it is kept for the benchmarks (bench/methods.py), not here.
SENTIMENT_SYSTEM_PROMPT = SEED_SYSTEM_PROMPT
SENTIMENT_PROMPT = SentimentPrompt(
    system=SENTIMENT_SYSTEM_PROMPT,
    before_text="",
    fence=("", ""),
    questions=(Question(after_text="", answer_prefix="", answers={"正面": ("正面",), "负面": ("负面",)}),),
    redact=ANSWER_WORDS,
    redact_patterns=CHAT_STRUCTURE,
    drop_segments=True,
    # The mean log-odds over the 300 shipped dev reviews (half of each class): the steadiest estimate on dev
    # (bench/README.md, issue 25); the content-free guess ("N/A", "无") is a guess at a review's lean, not a reading.
    calibration="dev_mean",
    # Flags about as many dev reviews as are mixed among the hand-read ones (20%), under this layout and
    # calibration: bench.prompt_robust --fit seed_drop_dev_mean.
    uncertain_below=0.65,
)

# The assistant's role in open-domain chat.
CHAT_SYSTEM_PROMPT = "你是一个友好、乐于助人的中文智能助手。请用简洁、自然的中文回答用户的问题。"

# Prefixes a user may type to pick one role; none means both, sentiment first.
EMOTION_TAG = "#EMOTION#"
CHAT_TAG = "#CHAT#"
