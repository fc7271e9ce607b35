"""The quality checks through Dagster: flagged images regenerated then skipped, cross-shard dedup
keeping the earliest shard, box filters and the quality report in metadata and lineage."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from PIL import Image

from synground_assets.adapters.suite import ModelSuite, model_suite
from synground_assets.config.recipes import BUILTIN_RECIPES, _cached_book
from synground_assets.definitions import GENERATION_ASSETS
from synground_assets.records.items import derive_seed
from synground_assets.resources import (
    LineageResource,
    ModelSuiteResource,
    StoreResource,
)
from synground_assets.resources.lineage import refreshed_lineage
from synground_assets.resources.store import ShardStore, default_data_root
from synground_assets.roles.base import AdapterInfo, GeneratedImage


@pytest.fixture
def recipe_file(tmp_path, monkeypatch):
    """Edit a copy of the built-in recipe book: `edit(book)` then it is what the code location reads."""

    def write(edit) -> None:
        book = yaml.safe_load(Path(BUILTIN_RECIPES).read_text())
        edit(book["recipes"])
        path = tmp_path / "recipes.yaml"
        path.write_text(yaml.safe_dump(book, sort_keys=False))
        monkeypatch.setenv("SYNGROUND_RECIPES", str(path))
        _cached_book.cache_clear()
        model_suite().clear()

    yield write
    monkeypatch.delenv("SYNGROUND_RECIPES")
    _cached_book.cache_clear()
    model_suite().clear()


def materialize(partition_key: str, assets, suite: ModelSuiteResource | None = None):
    result = dg.materialize(assets, partition_key=partition_key, instance=dg.DagsterInstance.ephemeral(),
                            resources={"store": StoreResource(), "lineage": LineageResource(),
                                       "suite": suite or ModelSuiteResource()})
    return {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}


def test_images_the_safety_checker_flags_are_regenerated_then_skipped_never_published(project_home, tiny_models,
                                                                                        recipe_file):
    # The tiny Stable Diffusion whose real safety checker is configured to flag every image
    # (synground_assets_tests/tiny_test_models.py); the pipeline's own check runs.
    recipe_file(lambda r: r["tiny-concept2text"]["roles"]["image_generator"].update(
        model="tiny:stable-diffusion-flagging"))
    metadata = materialize("tiny-concept2text|00000", GENERATION_ASSETS[:3])
    store = ShardStore(default_data_root())
    assert store.read_table("tiny-concept2text", "images", "00000").empty
    lineage = refreshed_lineage()
    skipped = lineage.query("SELECT item_id, reason FROM skipped_items WHERE stage = 'images'")
    assert len(skipped) == 4 and skipped.reason.str.contains("safety checker flagged").all()
    assert skipped.reason.str.contains("after 2 attempt").all()  # regenerate_attempts: 1 by default
    removals = lineage.query("SELECT item_id, filter, detail FROM removals WHERE stage = 'images' "
                             "ORDER BY item_id, detail")
    assert len(removals) == 8 and set(removals["filter"]) == {"safety_checker"}
    first = removals.iloc[0]
    seed = derive_seed("image", first.item_id)
    assert removals[removals.item_id == first.item_id].detail.str.contains(f"seed {seed}:|seed {seed + 1}:").all()
    assert metadata["images"]["removed_by/safety_checker"].value == 8
    assert "safety_checker" in metadata["images"]["quality_report"].value


class FlatOrRepeatedGenerator:
    """A stand-in generator for the dedup and degenerate checks: a flat grey image for prompts that
    mention a circle, one fixed rendered picture for every other prompt."""

    info = AdapterInfo("test-generator", "fixed")

    def generate(self, prompts, seeds):
        from synground_assets.tiny.shapes import ShapesImageGenerator

        picture = ShapesImageGenerator(64).render("a red square above a blue diamond", 7).image
        return [GeneratedImage(Image.new("RGB", (64, 64), (128, 128, 128)) if "circle" in p else picture.copy())
                for p in prompts]


class FlaggingSuite(ModelSuite):
    def role(self, recipe: str, role: str):
        return FlatOrRepeatedGenerator() if role == "image_generator" else super().role(recipe, role)


class FlaggingGenerators(ModelSuiteResource):
    def suite(self) -> ModelSuite:
        return FlaggingSuite()


def test_degenerate_images_are_skipped_and_near_duplicates_keep_the_earliest_shard(project_home, recipe_file):
    recipe_file(lambda r: r["shapes"].update(shard_size=8))
    for shard in ("00001", "00000", "00001"):  # the later shard first, then the earlier, then the later again
        materialize(f"shapes|{shard}", GENERATION_ASSETS[:3], FlaggingGenerators())
    store = ShardStore(default_data_root())
    first, second = (store.read_table("shapes", "images", s) for s in ("00000", "00001"))
    assert len(first) == 1  # one picture kept: the first item without a circle
    assert second.empty  # every picture of the later shard repeats the earlier shard's
    removals = refreshed_lineage().query("SELECT shard, item_id, filter, value, threshold, detail FROM removals")
    duplicates = removals[(removals["filter"] == "near_duplicate_image") & (removals.shard == "00001")]
    assert len(duplicates) and duplicates.detail.str.contains(first.item_id[0]).all()
    assert (duplicates.value == 0).all() and (duplicates.threshold == 4).all()
    flat = removals[removals["filter"] == "degenerate_image"]
    assert len(flat) and (flat.value < flat.threshold).all()


def test_duplicate_descriptions_are_removed_across_shards(project_home, recipe_file):
    # One object per item: 24 concepts x 5 scene templates, so 64 items repeat descriptions.
    recipe_file(lambda r: r["shapes"]["roles"]["concepts"]["options"].update(min_objects=1, max_objects=1))
    for shard in ("00000", "00001"):
        materialize(f"shapes|{shard}", GENERATION_ASSETS[:2])
    store = ShardStore(default_data_root())
    first, second = (store.read_table("shapes", "descriptions", s) for s in ("00000", "00001"))
    assert first.description.str.lower().is_unique and len(first) < 64
    assert not set(second.description.str.lower()) & set(first.description.str.lower())
    report = refreshed_lineage().query(
        "SELECT items_in, removed, kept FROM quality_report WHERE recipe = 'shapes' AND stage = 'descriptions' "
        "AND filter = 'duplicate_description'")
    assert report.values.tolist() == [[128, 128 - len(first) - len(second), len(first) + len(second)]]


def test_box_filters_run_in_the_boxes_stage_and_report(project_home, recipe_file):
    # A box area floor above every shape's size: every box is removed, each with its value.
    recipe_file(lambda r: r["shapes"].update(shard_size=4, quality={"min_box_area": 0.5}))
    metadata = materialize("shapes|00000", GENERATION_ASSETS)
    store = ShardStore(default_data_root())
    assert store.read_table("shapes", "boxes", "00000").empty
    removals = refreshed_lineage().query("SELECT * FROM removals WHERE stage = 'boxes'")
    assert len(removals) == metadata["boxes"]["detected_boxes"].value > 0
    assert (set(removals["filter"]) == {"min_box_area"} and (removals.value < 0.5).all()
            and removals.box_id.notna().all())
    assert metadata["boxes"]["removed_by/min_box_area"].value == len(removals)
