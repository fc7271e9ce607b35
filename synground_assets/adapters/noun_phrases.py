"""A rule-based phrase extractor: noun-phrase chunks read from the description, no model.

The chunker splits the description at punctuation and stop words (`roles/phrases.STOP_WORDS`); each
remaining run of content words is a candidate phrase (the candidate step of RAKE, Rose et al. 2010,
"Automatic keyword extraction from individual documents"), and an article or number just before the
run is kept with it ("a white couch", "two dogs"), as the paper's example phrases read. English noun
phrases end in their head noun, so a run longer than `max_words` keeps its last words.

It is deterministic and language-model-free: the real alternative to an LLM for the phrase role
where no instruction-tuned model is at hand (the tiny recipes, whose random-weight LLMs write text
that an LLM extractor cannot copy from), and a baseline to compare an LLM extractor against.
"""

from __future__ import annotations

import re
from typing import Sequence

from synground_assets.roles.base import AdapterInfo, PhraseCandidates, PhraseExtractor
from synground_assets.roles.phrases import STOP_WORDS, is_content_word

# Words that open a noun phrase and belong to it.
DETERMINERS = frozenset("a an the two three four five six seven eight nine ten several many".split())
# Verbs common in image descriptions: they end a noun phrase ("a cat | sleeps on | a couch").
VERBS = frozenset("""
sit sits sat stand stands stood lie lies lay sleep sleeps slept hold holds held carry carries carried
ride rides rode eat eats ate walk walks walked run runs ran play plays played look looks looked
show shows showed wear wears wore fly flies flew rest rests rested hang hangs hung lean leans leaned
float floats grow grows cover covers covered fill fills filled face faces jump jumps jumped swim swims
""".split())
_TOKEN = re.compile(r"[^\W_]+(?:['-][^\W_]+)*|[^\w\s]")


def _breaks(word: str, after_determiner: bool) -> bool:
    """A word that cannot be inside a noun phrase here. An '-ing' word is a verb ("a man riding a
    horse") unless it directly follows a determiner ("a sleeping cat", "the building")."""
    lower = word.lower()
    if not is_content_word(word) or lower in DETERMINERS or lower in VERBS:
        return True
    return lower.endswith("ing") and len(lower) > 4 and not after_determiner


def noun_phrase_spans(description: str, max_words: int = 4) -> list[tuple[int, int]]:
    """(start, end) character spans of the noun-phrase chunks of a text, in order: a determiner
    (or number) if one opens it, then at most `max_words` content words."""
    spans: list[tuple[int, int]] = []
    run: list[re.Match] = []
    opener: re.Match | None = None
    for token in [*_TOKEN.finditer(description), None]:  # None: the end of the text closes the last run
        word = token.group(0) if token else ""
        if token and not _breaks(word, after_determiner=opener is not None and not run):
            run.append(token)
            continue
        if run:
            words = run[-max_words:]
            start = opener.start() if opener is not None and len(run) <= max_words else words[0].start()
            spans.append((start, words[-1].end()))
        run = []
        opener = token if word.lower() in DETERMINERS or word.isdigit() else None
    return spans


class NounPhraseExtractor(PhraseExtractor):
    """Noun-phrase chunks of each description (at most `max_phrases`, first ones first)."""

    def __init__(self, max_words: int = 4, max_phrases: int = 8):
        if max_words < 1 or max_phrases < 1:
            raise ValueError(f"max_words and max_phrases must be at least 1 but are {max_words}, {max_phrases}")
        self.max_words, self.max_phrases = max_words, max_phrases
        self.info = AdapterInfo("noun-phrases", "rule-based-chunker-v1",
                                settings={"max_words": max_words, "max_phrases": max_phrases,
                                          "stop_words": len(STOP_WORDS)})

    def extract(self, descriptions: Sequence[str]) -> list[PhraseCandidates]:
        results = []
        for text in descriptions:
            phrases: list[str] = []
            for start, end in noun_phrase_spans(text, self.max_words):
                phrase = text[start:end]
                if phrase.lower() not in (p.lower() for p in phrases):
                    phrases.append(phrase)
            results.append(PhraseCandidates(tuple(phrases[:self.max_phrases])))
        return results
