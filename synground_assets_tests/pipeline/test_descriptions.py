"""The descriptions stage: batched == one by one, bad outputs skipped with their reason, duplicates
of this shard and of earlier shards removed (the first kept)."""

import pandas as pd

from synground_assets.pipeline.concepts import sample_concepts
from synground_assets.pipeline.descriptions import describe_items
from synground_assets.roles.base import AdapterInfo, GeneratedText
from synground_assets_tests.pipeline.stand_ins import Suite, earlier_rows, same_frames, shapes

NO_EARLIER = earlier_rows(pd.DataFrame(columns=["item_id", "description"]))


def concepts(recipe, shard="00000"):
    return sample_concepts(recipe, shard, Suite()).table


class Describer:
    """Writes `answers[i]` for the i-th item of the shard (by its index), raising on "raise"."""

    info = AdapterInfo("fake-describer", "fake")

    def __init__(self, answers):
        self.answers = answers

    def describe(self, items):
        outputs = []
        for item in items:
            answer = self.answers[int(item.item_id.rsplit(":", 1)[-1])]
            if answer == "raise":
                raise RuntimeError("CUDA out of memory")
            outputs.append(answer)
        return outputs


def test_batched_descriptions_equal_one_by_one():
    recipe = shapes(batch_sizes={"describer": 3})
    table = concepts(recipe)
    batched = describe_items(recipe, "00000", table, Suite(), NO_EARLIER)
    one_by_one = describe_items(shapes(batch_sizes={"describer": 1}), "00000", table, Suite(), NO_EARLIER)
    assert same_frames(batched.tables, one_by_one.tables) and same_frames(batched.lineage, one_by_one.lineage)
    assert batched.table.item_id.tolist() == table.item_id.tolist()  # 2-4 shapes each: no two alike here
    assert batched.counts == {"descriptions": len(table)}


def test_bad_outputs_are_skipped_with_their_reason_and_recorded_as_removals():
    answers = [GeneratedText("A red square."), GeneratedText("  "), GeneratedText("I'm sorry, I cannot do that."),
               GeneratedText("a blue circle next to a", hit_token_limit=True), "raise",
               GeneratedText("A blue circle, cut at the limit.", hit_token_limit=True)]
    recipe = shapes(shard_size=len(answers), batch_sizes={"describer": 4})
    table = concepts(recipe)
    result = describe_items(recipe, "00000", table, Suite(describer=Describer(answers)), NO_EARLIER)
    ids = table.item_id.tolist()
    assert result.table.values.tolist() == [[ids[0], "A red square."], [ids[5], "A blue circle, cut at the limit."]]
    assert [r.filter for r in result.removals] == ["empty_output", "refusal", "truncated_output"]
    reasons = dict(result.skipped)
    assert reasons[ids[4]] == "RuntimeError: CUDA out of memory"
    assert reasons[ids[1]] == "describer output: the model returned no text"
    assert reasons[ids[2]].startswith("describer output: the model refused")
    assert set(reasons) == {ids[1], ids[2], ids[3], ids[4]}


def test_a_truncated_output_is_kept_when_the_recipe_says_so():
    answers = [GeneratedText("a blue circle next to a", hit_token_limit=True)]
    recipe = shapes(shard_size=1, quality={"drop_truncated_text": False})
    result = describe_items(recipe, "00000", concepts(recipe), Suite(describer=Describer(answers)), NO_EARLIER)
    assert result.table.description.tolist() == ["a blue circle next to a"]


def test_duplicates_keep_the_first_item_and_the_earlier_shards_item():
    answers = [GeneratedText(t) for t in ("A red square.", "a red  SQUARE", "A blue circle.", "A green diamond!")]
    recipe = shapes(shard_size=len(answers))
    table = concepts(recipe, "00001")
    earlier = pd.DataFrame({"item_id": ["shapes:00000:0007"], "description": ["A green diamond."]})
    result = describe_items(recipe, "00001", table, Suite(describer=Describer(answers)), earlier_rows(earlier))
    assert result.table.description.tolist() == ["A red square.", "A blue circle."]
    assert [(r.item_id, r.filter, r.detail) for r in result.removals] == [
        (table.item_id[1], "duplicate_description", f"same description as {table.item_id[0]}"),
        (table.item_id[3], "duplicate_description", "same description as shapes:00000:0007")]
    report = result.lineage["shard_quality"]
    assert report[["items_in", "filter", "removed", "kept"]].values.tolist() == [[4, "duplicate_description", 2, 2]]
    off = describe_items(shapes(shard_size=len(answers), quality={"dedup_descriptions": False}), "00001", table,
                         Suite(describer=Describer(answers)), earlier_rows(earlier))
    assert len(off.table) == len(answers)


def test_an_overlong_description_is_removed_and_escapes_and_control_characters_are_stripped():
    """Issue 30 (minor): a 100,000-character description was kept whole (the generator reads 77 tokens,
    the phrases came from all of it) and ANSI escape fragments became boxed phrases."""
    answers = [GeneratedText("a red square " * 8000),
               GeneratedText("\x1b[31mA red square\x1b[0m next\x07 to a circle."),
               GeneratedText("\x1b]0;title\x07A blue circle.\x00"),
               GeneratedText("A green triangle.")]
    recipe = shapes(shard_size=len(answers))
    table = concepts(recipe)
    result = describe_items(recipe, "00000", table, Suite(describer=Describer(answers)), NO_EARLIER)
    ids = table.item_id.tolist()
    assert result.table.values.tolist() == [[ids[1], "A red square  next  to a circle."],
                                            [ids[2], "A blue circle."], [ids[3], "A green triangle."]]
    removals = {(r.item_id, r.filter): r for r in result.removals}
    assert set(removals) == {(ids[0], "too_long"), (ids[1], "control_characters"), (ids[2], "control_characters")}
    assert removals[ids[1], "control_characters"].value == 3 and removals[ids[2], "control_characters"].value == 2
    assert dict(result.skipped)[ids[0]].startswith("describer output: 103999 characters, over the limit of 2000")
