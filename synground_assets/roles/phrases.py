"""Validation of extracted phrases, shared by every phrase extractor and by `boxes`.

`phrase_problem` is the one definition of a usable phrase: some word of two or more letters (or a
number) that is not a stop word, at most `MAX_PHRASE_WORDS` words and `MAX_PHRASE_CHARS`
characters. "." or "a" or "of the" names nothing a detector could box.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

MAX_PHRASE_WORDS = 12
MAX_PHRASE_CHARS = 100

# Function words: articles, pronouns, prepositions, conjunctions, auxiliaries. A phrase made of
# these alone names no object; the rule-based extractor (`adapters/noun_phrases.py`) splits at them.
STOP_WORDS = frozenset("""
a an the this that these those some any each every no other another such
i me my we us our you your he him his she her it its they them their there here
and or but nor so yet if then than as because while when where which who whom whose what how why
of in on at to by for from with without into onto upon over under above below behind beside besides
between among near next through across along around about against toward towards up down out off
is are was were be been being am has have had do does did can could will would shall should may might must
not very too also just only all both either neither
""".split())

_WORD = re.compile(r"[^\W_]+")  # letters or digits


def is_content_word(word: str) -> bool:
    """A word that can name something: a number, or two or more letters and not a stop word."""
    return word.isdigit() or (len(word) > 1 and word.lower() not in STOP_WORDS)


def phrase_problem(phrase: Any) -> str | None:
    """Why a phrase cannot be grounded, or None when it is usable."""
    if not isinstance(phrase, str) or not phrase.strip():
        return "empty phrase"
    words = _WORD.findall(phrase)
    if not words:
        return "no letter or digit in the phrase"
    if not any(is_content_word(w) for w in words):
        return "only stop words or single letters"
    if len(words) > MAX_PHRASE_WORDS:
        return f"longer than {MAX_PHRASE_WORDS} words"
    if len(phrase) > MAX_PHRASE_CHARS:
        return f"longer than {MAX_PHRASE_CHARS} characters"
    return None


def filter_phrases(description: str, candidates: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Keep candidates that are usable (`phrase_problem`), new, and occur in the description
    (case-insensitive).

    Returns (kept, dropped) where dropped holds (phrase, reason) so nothing vanishes silently.
    """
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    text = " ".join(description.split()).lower()
    for raw in candidates:
        phrase = " ".join(str(raw).split())
        problem = phrase_problem(phrase)
        if problem:
            dropped.append((phrase, problem))
        elif phrase.lower() in (k.lower() for k in kept):
            dropped.append((phrase, "duplicate phrase"))
        elif phrase.lower() not in text:
            dropped.append((phrase, "phrase does not occur in the description"))
        else:
            kept.append(phrase)
    return kept, dropped
