"""Checks of generated text (describers, LLMs): empty, cut off at the token limit, or a refusal.

Describers return `roles.base.GeneratedText`: the text and whether decoding stopped at the token
limit, so a finished sentence can be told from one cut mid-word or mid-sentence.
"""

from __future__ import annotations

import hashlib
import re

from synground_assets.roles.base import GeneratedText

# Openings of an assistant's refusal or apology instead of an answer (checked at the start only:
# a description may well contain "cannot" later on).
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i (?:can ?not|can't|won't|am unable to|am not able to)"
    r"|unfortunately,? i|as an ai\b|as a language model|i'm not able to|i'm unable to)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


def text_problem(output: GeneratedText | None, drop_truncated: bool = True) -> tuple[str, str] | None:
    """(filter, reason) when a generated text must not be passed on, else None. Filters:
    `empty_output`, `refusal`, `truncated_output` (hit the token limit without ending a sentence;
    checked when `drop_truncated`)."""
    text = output.text.strip() if output is not None else ""
    if not text:
        return "empty_output", "the model returned no text"
    if _REFUSAL.match(text):
        return "refusal", f"the model refused: {text[:60]!r}"
    if drop_truncated and output.hit_token_limit and not _SENTENCE_END.search(text):
        return "truncated_output", f"cut off at the token limit: ...{text[-40:]!r}"
    return None


def normalised_description(text: str) -> str:
    """The key two descriptions are duplicates by: case, spacing and punctuation ignored."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def description_key(text: str) -> str:
    """A short digest of the normalised description (16 hex digits), the lineage index's lookup key."""
    return hashlib.sha256(normalised_description(text).encode()).hexdigest()[:16]


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
