"""Reading an LLM's answer: the short phrases it lists, whatever its chatter, numbering, bullets,
quotes or JSON. Model-free (no torch): the phrase extractor (`adapters/hf_text.py`) calls it on the
text a model wrote, and its tests need no model."""

from __future__ import annotations

import json
import re

_MARKER = re.compile(r"^\s*(?:[-*•·+>]+|\(?\d{1,3}\s*[.):\]]|\(?[a-zA-Z][.)])\s*")
_LABEL = re.compile(r"^\s*(?:noun\s+)?(?:phrases?|objects?|answer|output)\s*:\s*", re.IGNORECASE)
_CHATTER = re.compile(r"^(?:sure|here|okay|ok|certainly|of course|i hope|i've|i have|note|these are|the (?:short )?"
                      r"(?:noun )?phrases|the objects|let me|below)\b", re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»"
_NOTHING = {"none", "n/a", "na", "nothing", "no objects", "no phrases", "-"}


def _clean_phrase(text: str) -> str:
    text = text.replace("**", "").strip()
    text = text.strip(_QUOTES + " ").rstrip(".,;:!?").strip(_QUOTES + " ")
    text = re.sub(r"^and\s+", "", text, flags=re.IGNORECASE)
    return " ".join(text.split())


def _json_list(text: str) -> list[str] | None:
    match = re.search(r"\[[^\[\]]*\]", text, re.DOTALL)
    if not match:
        return None
    try:
        value = json.loads(match.group(0))
    except ValueError:
        return None
    return [str(v) for v in value] if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def parse_phrase_list(text: str, max_words: int = 8) -> list[str]:
    """Short phrases from an LLM's answer, robust to chatter, numbering, bullets, quotes, a JSON list,
    comma-separated lines, duplicates and empty answers. Phrases longer than `max_words` words are
    dropped as chatter. Order is kept; duplicates (case-insensitive) keep their first spelling."""
    candidates = _json_list(text)
    if candidates is None:
        lines = [line for line in text.splitlines() if line.strip()]
        marked = [line for line in lines if _MARKER.match(line)]
        if marked:  # a list: unmarked lines are the chatter around it
            candidates = [_MARKER.sub("", line, count=1) for line in marked]
        else:
            candidates = []
            for line in lines:
                line = _LABEL.sub("", line)
                if line.rstrip().endswith(":") or _CHATTER.match(line.strip(_QUOTES + " ")):
                    continue
                candidates += re.split(r"[,;]", line)
    phrases: list[str] = []
    seen: set[str] = set()
    for candidate in candidates:
        phrase = _clean_phrase(_LABEL.sub("", candidate))
        key = phrase.lower()
        if not phrase or key in _NOTHING or key in seen or len(phrase.split()) > max_words:
            continue
        seen.add(key)
        phrases.append(phrase)
    return phrases
