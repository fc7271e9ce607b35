"""The code location loads, and its graph is what users see in the UI: pinned here."""

import dagster as dg

from synground_assets.config.recipes import recipe_book
from synground_assets.definitions import defs


def asset_graph():
    return defs.resolve_asset_graph()


def test_generation_assets_and_their_deps():
    graph = asset_graph()
    parents = {key.to_user_string(): sorted(p.to_user_string() for p in graph.get(key).parent_keys)
               for key in graph.get_all_asset_keys()}
    assert {name: parents[name] for name in ["concepts", "descriptions", "images", "phrases", "boxes"]} == {
        "concepts": [],
        "descriptions": ["concepts"],
        "images": ["descriptions"],
        "phrases": ["descriptions"],
        "boxes": ["images", "phrases"],
    }


def test_generation_assets_are_partitioned_by_recipe_and_shard():
    graph = asset_graph()
    book = recipe_book()
    for name in ["concepts", "descriptions", "images", "phrases", "boxes"]:
        partitions = graph.get(dg.AssetKey(name)).partitions_def
        assert isinstance(partitions, dg.MultiPartitionsDefinition)
        dimensions = {d.name: d.partitions_def.get_partition_keys() for d in partitions.partitions_defs}
        assert dimensions["recipe"] == sorted(book.recipes)
        assert dimensions["shard"] == [f"{i:05d}" for i in range(book.max_shards)]
        assert "shapes|00000" in partitions.get_partition_keys()


def test_generation_stages_take_no_pool_slot_and_checks_are_attached():
    graph = asset_graph()  # GPU runs are limited by their recipe's device tag (synground_assets/ops/scale/run_tags.py)
    assert all(
        not graph.get(dg.AssetKey(name)).pools for name in ["concepts", "descriptions", "images", "phrases", "boxes"]
    )
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {"boxes_in_image_bounds", "yield_above_threshold", "no_empty_phrase"} <= checks


def test_exports_sit_apart_from_the_pipeline_and_read_every_shard_of_their_recipe():
    graph = asset_graph()
    node = graph.get(dg.AssetKey("exports"))
    assert node.group_name == "exports" and graph.get(dg.AssetKey("boxes")).group_name == "generation"
    assert node.partitions_def.get_partition_keys() == sorted(recipe_book().recipes)
    assert [p.to_user_string() for p in node.parent_keys] == ["boxes"]
    mapping = graph.get_partition_mapping(dg.AssetKey("exports"), dg.AssetKey("boxes"))
    assert isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping)


def test_the_missing_shards_schedule_targets_the_generation_job():
    repository = defs.get_repository_def()
    schedule = repository.get_schedule_def("missing_shards")
    job = repository.get_job("generation")
    assert schedule.job_name == "generation"
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
        "concepts", "descriptions", "images", "phrases", "boxes"}
    boxes_partitions = asset_graph().get(dg.AssetKey("boxes")).partitions_def
    assert job.partitions_def.get_partition_keys() == boxes_partitions.get_partition_keys()
