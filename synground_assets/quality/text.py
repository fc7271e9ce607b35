"""Checks of generated text (describers, LLMs): empty, cut off at the token limit, or a refusal.

Adapters return `GeneratedText`, a `str` that also says whether decoding stopped because it hit
`max_new_tokens` (rather than at an end-of-sequence token), so the stage can tell a finished
sentence from one cut mid-word or mid-sentence without a tokenizer of its own.
"""

from __future__ import annotations

import re

# Openings of an assistant's refusal or apology instead of an answer (checked at the start only:
# a description may well contain "cannot" later on).
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i (?:can ?not|can't|won't|am unable to|am not able to)"
    r"|unfortunately,? i|as an ai\b|as a language model|i'm not able to|i'm unable to)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


class GeneratedText(str):
    """Generated text that knows whether decoding hit the token limit."""

    hit_token_limit: bool = False

    def __new__(cls, text: str, hit_token_limit: bool = False):
        value = super().__new__(cls, text)
        value.hit_token_limit = hit_token_limit
        return value


def text_problem(text: str | None, drop_truncated: bool = True) -> tuple[str, str] | None:
    """(filter, reason) when a generated text must not be passed on, else None. Filters:
    `empty_output`, `refusal`, `truncated_output` (hit the token limit without ending a sentence;
    checked when `drop_truncated`)."""
    if text is None or not text.strip():
        return "empty_output", "the model returned no text"
    if _REFUSAL.match(text.strip()):
        return "refusal", f"the model refused: {text.strip()[:60]!r}"
    if drop_truncated and getattr(text, "hit_token_limit", False) and not _SENTENCE_END.search(text.strip()):
        return "truncated_output", f"cut off at the token limit: ...{text.strip()[-40:]!r}"
    return None


def normalised_description(text: str) -> str:
    """The key two descriptions are duplicates by: case, spacing and punctuation ignored."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def find_duplicate_texts(new: list[tuple[str, str]], earlier: list[tuple[str, str]]) -> dict[str, str]:
    """new, earlier: (item_id, text) in order. item_id -> the first item with the same normalised
    text (an earlier shard's, or one before it in `new`)."""
    first: dict[str, str] = {}
    for item, text in earlier:
        first.setdefault(normalised_description(text), item)
    duplicates = {}
    for item, text in new:
        key = normalised_description(text)
        if key in first:
            duplicates[item] = first[key]
        else:
            first[key] = item
    return duplicates


class PhraseCandidates(list):
    """A phrase extractor's candidates for one description, with what the answer check found:
    `problem` (an empty answer or a refusal) and `cut_off` (the last phrase of an answer cut at the
    token limit, taken out of the list because it may end mid-word: "a white stuffed ted")."""

    def __init__(self, phrases=(), problem: str | None = None, cut_off: str | None = None):
        super().__init__(phrases)
        self.problem, self.cut_off = problem, cut_off
