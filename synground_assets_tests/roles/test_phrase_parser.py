"""parse_phrase_list reads the short phrases out of whatever an LLM answers."""

import pytest

from synground_assets.roles.answers import parse_phrase_list

CASES = [
    ("plain lines", "a cat\na couch\na white stuffed teddy bear", ["a cat", "a couch", "a white stuffed teddy bear"]),
    ("numbered with chatter",
     "Sure! Here are the noun phrases:\n1. a cat\n2) a couch\n3. a white teddy bear\nI hope this helps!",
     ["a cat", "a couch", "a white teddy bear"]),
    ("bullets of several kinds", "- a dog\n* a red frisbee\n• the park", ["a dog", "a red frisbee", "the park"]),
    ("quotes and trailing punctuation", '1. "a cat".\n2. \'a couch\',\n3. “a lamp”', ["a cat", "a couch", "a lamp"]),
    ("comma separated with a label", "Phrases: a cat, a couch, and a lamp.", ["a cat", "a couch", "a lamp"]),
    ("semicolons", "a cat; a couch", ["a cat", "a couch"]),
    ("json list inside chatter", 'Output: ["a cat", "a couch"] done', ["a cat", "a couch"]),
    ("duplicates keep first spelling", "A cat\na cat\na Couch\na couch", ["A cat", "a Couch"]),
    ("empty answer", "", []),
    ("whitespace only", "  \n\t\n", []),
    ("none answer", "None", []),
    ("header line ending in colon", "The objects in the description:\na boat\na lake",
     ["a boat", "a lake"]),
    ("markdown bold", "1. **a cat**\n2. **a couch**", ["a cat", "a couch"]),
    ("a long chatter sentence is dropped",
     "- a cat\n- this description mentions many other things that are not objects",
     ["a cat"]),
    ("lettered list", "a) a cat\nb) a couch", ["a cat", "a couch"]),
    ("inner whitespace collapsed", "-   a    big   dog  ", ["a big dog"]),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in CASES], ids=[name for name, _, _ in CASES])
def test_parse_phrase_list(text, expected):
    assert parse_phrase_list(text) == expected


def test_max_words_is_configurable():
    assert parse_phrase_list("a very big brown dog", max_words=3) == []
    assert parse_phrase_list("a very big brown dog", max_words=5) == ["a very big brown dog"]
