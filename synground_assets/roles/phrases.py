"""Validation of extracted phrases, shared by every phrase extractor."""

from __future__ import annotations

from typing import Sequence


def filter_phrases(description: str, candidates: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Keep candidates that are non-empty, new, and occur in the description (case-insensitive).

    Returns (kept, dropped) where dropped holds (phrase, reason) so nothing vanishes silently.
    """
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    text = description.lower()
    for raw in candidates:
        phrase = " ".join(str(raw).split())
        if not phrase:
            dropped.append((raw, "empty phrase"))
        elif phrase.lower() in (k.lower() for k in kept):
            dropped.append((phrase, "duplicate phrase"))
        elif phrase.lower() not in text:
            dropped.append((phrase, "phrase does not occur in the description"))
        else:
            kept.append(phrase)
    return kept, dropped
