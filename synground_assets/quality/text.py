"""Checks of generated text (describers, LLMs): empty, cut off at the token limit, or a refusal.

Describers return `roles.base.GeneratedText`: the text and whether decoding stopped at the token
limit, so a finished sentence can be told from one cut mid-word or mid-sentence.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from synground_assets.roles.base import GeneratedText

# Openings of an assistant's refusal or apology instead of an answer (checked at the start only:
# a description may well contain "cannot" later on).
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i (?:can ?not|can't|won't|am unable to|am not able to)"
    r"|unfortunately,? i|as an ai\b|as a language model|i'm not able to|i'm unable to)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
# A description longer than this is removed (`too_long`): the image generator reads 77 CLIP tokens
# (a few hundred characters), and phrases from the rest would name what no image shows.
MAX_DESCRIPTION_CHARS = 2000
# Terminal escape sequences: CSI (colours, cursor), OSC (titles, links) and the two-character ones.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# What is left of a CSI sequence whose ESC was lost ("[31m"): never a phrase.
_ANSI_FRAGMENT = re.compile(r"\[[\d;]+[A-Za-z]")


def strip_control(text: str) -> tuple[str, int]:
    """`text` without terminal escape sequences and control characters (each replaced by a space,
    newlines and tabs kept), and how many were stripped (0: `text` unchanged)."""
    without_escapes, escapes = _ANSI.subn(" ", text)
    controls = sum(1 for c in without_escapes if c not in "\n\t" and unicodedata.category(c) == "Cc")
    if controls:
        without_escapes = "".join(" " if c not in "\n\t" and unicodedata.category(c) == "Cc" else c
                                  for c in without_escapes)
    return (without_escapes, escapes + controls) if escapes or controls else (text, 0)


def phrase_text_problem(phrase: str) -> str | None:
    """Why a candidate phrase is not text a box can ground (control characters, an escape fragment), or None."""
    if strip_control(phrase)[1] or _ANSI_FRAGMENT.search(phrase):
        return "control characters or a terminal escape fragment"
    return None


def text_problem(output: GeneratedText | None, drop_truncated: bool = True,
                 max_chars: int = MAX_DESCRIPTION_CHARS) -> tuple[str, str] | None:
    """(filter, reason) when a generated text must not be passed on, else None. Filters:
    `empty_output`, `too_long` (over `max_chars`), `refusal`, `truncated_output` (hit the token limit
    without ending a sentence; checked when `drop_truncated`)."""
    text = output.text.strip() if output is not None else ""
    if not text:
        return "empty_output", "the model returned no text"
    if len(text) > max_chars:
        return "too_long", f"{len(text)} characters, over the limit of {max_chars}: {text[:40]!r}..."
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
