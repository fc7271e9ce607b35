"""The phrases stage: batched == one by one, an extractor's refusal skips the item, a phrase cut at
the token limit is dropped with that reason, every candidate kept as a row."""

from synground_assets.pipeline.phrases import extract_phrases
from synground_assets.records.items import phrase_id
from synground_assets.roles.base import AdapterInfo, PhraseCandidates
from synground_assets_tests.pipeline.stand_ins import Suite, described, same_frames, shapes


def test_batched_phrases_equal_one_by_one():
    texts = described()
    batched = extract_phrases(shapes(batch_sizes={"phrase_extractor": 4}), "00000", texts, Suite())
    one_by_one = extract_phrases(shapes(batch_sizes={"phrase_extractor": 1}), "00000", texts, Suite())
    assert same_frames(batched.tables, one_by_one.tables) and same_frames(batched.lineage, one_by_one.lineage)
    table = batched.table
    assert table.kept.all() and len(table) == 2 * len(texts)  # two objects per description
    assert table.phrase_id.tolist() == [phrase_id(i, j) for i, j in zip(table.item_id, table.phrase_index)]
    assert batched.counts == {"phrases": len(table), "dropped_phrases": 0}


class Extractor:
    info = AdapterInfo("fake-extractor", "fake")

    def __init__(self, answers):
        self.answers = answers

    def extract(self, descriptions):
        return [self.answers[text] for text in descriptions]


def test_a_refusal_skips_the_item_and_a_cut_off_phrase_is_dropped_with_its_reason():
    texts = described()[:3]
    answers = {
        texts.description[0]: PhraseCandidates(("a red square", "a blue diamond", "a pink elephant"),
                                               cut_off="a blue dia"),
        texts.description[1]: PhraseCandidates((), problem="the model refused: 'I cannot'"),
        texts.description[2]: PhraseCandidates(("an orange diamond", "the")),
    }
    result = extract_phrases(shapes(), "00000", texts, Suite(phrase_extractor=Extractor(answers)))
    assert result.skipped == [(texts.item_id[1], "phrase extractor output: the model refused: 'I cannot'")]
    rows = result.table[["item_id", "phrase", "phrase_index", "kept"]].values.tolist()
    first, third = texts.item_id[0], texts.item_id[2]
    assert rows[:2] == [[first, "a red square", 0, True], [first, "a blue diamond", 1, True]]
    dropped = result.table[~result.table.kept]
    reasons = dict(zip(dropped.phrase, dropped.drop_reason))
    assert reasons["a blue dia"] == "cut off at the phrase extractor's token limit"
    assert {"a pink elephant", "the"} <= set(dropped.phrase)  # not in the description; a stop word
    assert [[third, "an orange diamond", 0, True]] == [r for r in rows if r[0] == third and r[3]]
    assert result.counts == {"phrases": 3, "dropped_phrases": 3}


def test_escape_fragments_are_dropped_and_an_overlong_description_skips_its_item():
    """Issue 30 (minor): ANSI escape fragments of a description became boxed phrases, and a 100,000-
    character description (from a shard written before the limit) gave phrases from all of it."""
    texts = described()[:2].copy()
    texts.loc[0, "description"] = "[31ma red square[0m next to \x1b a blue diamond"
    texts.loc[1, "description"] = "a red square " * 8000
    answers = {texts.description[0]: PhraseCandidates(("[31ma red square", "a blue diamond", "\x1b a blue"))}
    result = extract_phrases(shapes(), "00000", texts, Suite(phrase_extractor=Extractor(answers)))
    assert result.skipped == [(texts.item_id[1], "description of 104000 characters, over the limit of 2000: "
                                                 "rematerialize its descriptions shard")]
    kept = result.table[result.table.kept]
    assert kept.phrase.tolist() == ["a blue diamond"]
    dropped = dict(zip(result.table[~result.table.kept].phrase, result.table[~result.table.kept].drop_reason))
    assert dropped == {"[31ma red square": "control characters or a terminal escape fragment",
                       "\x1b a blue": "control characters or a terminal escape fragment"}
