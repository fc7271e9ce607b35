"""Issue 11, items 5 and 9: what a usable phrase is, and the rule-based noun-phrase extractor."""

import pytest

from synground_assets.adapters.noun_phrases import NounPhraseExtractor, noun_phrase_spans
from synground_assets.roles.base import PhraseCandidates
from synground_assets.roles.phrases import MAX_PHRASE_CHARS, filter_phrases, phrase_problem


@pytest.mark.parametrize("phrase, reason", [
    ("", "empty phrase"), ("   ", "empty phrase"), (None, "empty phrase"),
    (".", "no letter or digit"), (",", "no letter or digit"), ("--!", "no letter or digit"),
    ("a", "only stop words"), ("x", "only stop words"), ("of the", "only stop words"), ("The A", "only stop words"),
    ("one two three four five six seven eight nine ten eleven twelve thirteen", "longer than 12 words"),
    ("a" + "b" * MAX_PHRASE_CHARS, "longer than 100 characters"),
])
def test_unusable_phrases_are_named_with_their_reason(phrase, reason):
    assert reason in phrase_problem(phrase)


@pytest.mark.parametrize("phrase", ["a cat", "2", "the red couch", "Éclair", "a 3-legged stool", "ox"])
def test_usable_phrases_pass(phrase):
    assert phrase_problem(phrase) is None


def test_filter_records_every_drop_with_its_reason():
    kept, dropped = filter_phrases("A cat sleeps on a couch.", ["a cat", ".", "a", " ", "A Cat", "a dog", "couch"])
    assert kept == ["a cat", "couch"]
    assert [reason for _, reason in dropped] == [
        "no letter or digit in the phrase", "only stop words or single letters", "empty phrase", "duplicate phrase",
        "phrase does not occur in the description"]


@pytest.mark.parametrize("text, phrases", [
    ("A cat sleeps on a couch next to a white stuffed teddy bear.", ["A cat", "a couch", "a white stuffed teddy bear"]),
    ("Two men in red shirts carry a wooden boat to the lake.", ["Two men", "red shirts", "a wooden boat", "the lake"]),
    ("a man riding a horse near the building", ["a man", "a horse", "the building"]),
    ("A sleeping cat, and 3 dogs!", ["A sleeping cat", "3 dogs"]),
    ("the big old rusty red barn doors", ["rusty red barn doors"]),  # too long: its last 4 words, the head
    ("", []), ("... , !", []), ("of the and a", []),
])
def test_noun_phrase_chunks(text, phrases):
    assert NounPhraseExtractor().extract([text]) == [PhraseCandidates(tuple(phrases))]


def test_noun_phrases_are_substrings_that_pass_the_filter_and_respect_the_bounds():
    text = "Cups cups CUPS on a table, the table; 1 2 3 4 5 6 7 8 9 10 11 12 apples"
    (found,) = NounPhraseExtractor(max_words=3, max_phrases=3).extract([text])
    phrases = list(found.phrases)
    assert phrases == ["Cups cups CUPS", "a table", "the table"]
    (found_all,) = NounPhraseExtractor(max_words=3, max_phrases=9).extract([text])
    assert list(found_all.phrases) == phrases + ["11 12 apples"]
    for start, end in noun_phrase_spans(text, 3):
        assert len(text[start:end].split()) <= 4  # 3 words and an article
    kept, dropped = filter_phrases(text, phrases)
    assert kept == phrases and not dropped
