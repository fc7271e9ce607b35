"""The concepts stage: ids and seeds from (recipe, shard, index), one row per item."""

from synground_assets.pipeline.concepts import sample_concepts
from synground_assets.records.items import item_id, item_seed
from synground_assets_tests.pipeline.stand_ins import Suite, shapes


def test_concept_sets_derive_from_recipe_shard_and_index():
    result = sample_concepts(shapes(shard_size=5), "00007", Suite())
    table = result.table
    assert table.item_id.tolist() == [item_id("shapes", 7, i) for i in range(5)]
    assert table.seed.tolist() == [item_seed("shapes", 7, i) for i in range(5)]
    assert table.item_index.tolist() == list(range(5))
    assert all(2 <= len(concepts) <= 4 for concepts in table.concepts)  # the recipe's min/max_objects
    assert result.lineage["concept_sets"] is table and result.counts == {"items": 5}


def test_a_shard_is_reproducible():
    first, again = (sample_concepts(shapes(), "00002", Suite()).table for _ in range(2))
    assert first.equals(again)


def test_an_unreadable_source_image_is_recorded_as_a_removal_of_the_item_that_met_it(tmp_path):
    from synground_assets.adapters.sources import ImageFolderSampler
    from synground_assets_tests.adapters.test_sources import image_folder

    sampler = ImageFolderSampler(str(image_folder(tmp_path, good=2, bad=6)))
    result = sample_concepts(shapes(shard_size=16), "00000", Suite(concepts=sampler))
    assert all("/good-" in path for path in result.table.source_image)
    assert result.removals and {r.filter for r in result.removals} == {"unreadable_source_image"}
    assert set(result.lineage["removals"].detail.str.split(":").str[0]) == set(sampler.unreadable)
    assert result.counts == {"items": 16, "unreadable_source_images": len(result.removals)}
