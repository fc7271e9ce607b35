"""The `exports` asset: a recipe's published shards as COCO, ODVG and AMC files that read back whole."""

import json
import os
import stat
import tarfile

import dagster as dg
import pandas as pd
import pytest
from PIL import Image

from synground_assets.assets.exports import card_facts, exports
from synground_assets.datasets.exports import read_amc_grounding, read_coco_grounding, read_odvg
from synground_assets.datasets.hub_formats import dataset_card, webdataset_key
from synground_assets.definitions import GENERATION_ASSETS
from synground_assets.recipes import recipe_book
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource
from synground_assets.resources.store import ShardStore, default_data_root

RESOURCES = {"store": StoreResource(), "models": ModelSuiteResource(), "lineage": LineageResource()}
BOX_KEY = ["item_id", "image_path", "width", "height", "phrase", "x0", "y0", "x1", "y1"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two shapes shards materialized through Dagster, then exported (once for this module)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SYNGROUND_HOME", str(tmp_path_factory.mktemp("home")))
        env.delenv("SYNGROUND_DATA", raising=False)
        env.delenv("SYNGROUND_LINEAGE", raising=False)
        instance = dg.DagsterInstance.ephemeral()
        for shard in ["00000", "00001"]:
            assert dg.materialize(GENERATION_ASSETS, partition_key=f"shapes|{shard}", instance=instance,
                                  resources=RESOURCES).success
        result = dg.materialize([exports], partition_key="shapes", instance=instance, resources=RESOURCES)
        assert result.success
        yield ShardStore(default_data_root()), result.get_asset_materialization_events()[0].materialization.metadata


def published_boxes(store: ShardStore) -> pd.DataFrame:
    """What the shards hold: every box joined to its phrase and image, as the exports should carry."""
    frames = []
    for shard in ["00000", "00001"]:
        boxes = store.read_table("shapes", "boxes", shard)
        phrases = store.read_table("shapes", "phrases", shard)[["phrase_id", "phrase"]]
        images = store.read_table("shapes", "images", shard)[["item_id", "image_path", "width", "height"]]
        frames.append(boxes.merge(phrases, on="phrase_id").merge(images, on="item_id"))
    return pd.concat(frames).sort_values("box_id", ignore_index=True)


def same_boxes(read_back: pd.DataFrame, expected: pd.DataFrame) -> None:
    ordered = read_back.sort_values(["item_id", "x0", "y0", "phrase"], ignore_index=True)
    wanted = expected.sort_values(["item_id", "x0", "y0", "phrase"], ignore_index=True)
    pd.testing.assert_frame_equal(ordered[BOX_KEY], wanted[BOX_KEY], check_dtype=False)


def test_exports_hold_every_published_box_and_read_back_through_pycocotools(published):
    store, metadata = published
    expected = published_boxes(store)
    folder = store.shard_dir("shapes", "exports", "all")
    coco = read_coco_grounding(folder / "coco_grounding.json")
    same_boxes(coco, expected)
    assert sorted(coco.box_id) == expected.box_id.tolist()
    same_boxes(read_odvg(folder / "odvg.jsonl"), expected)
    amc = read_amc_grounding(folder / "amc_grounding.json")
    same_boxes(amc, expected)
    assert sorted(amc.box_id) == expected.box_id.tolist()
    assert metadata["boxes"].value == len(expected) and metadata["shards"].value == 2
    assert metadata["images"].value == expected.item_id.nunique() == 128
    assert metadata["coco_path"].path == str(folder / "coco_grounding.json")


def test_export_captions_are_the_descriptions_and_image_paths_open_from_the_data_root(published):
    store, metadata = published
    folder = store.shard_dir("shapes", "exports", "all")
    descriptions = pd.concat(store.read_table("shapes", "descriptions", s) for s in ["00000", "00001"])
    captions = dict(zip(descriptions.item_id, descriptions.description))
    document = json.loads((folder / "coco_grounding.json").read_text())
    for image in document["images"][:10]:
        assert image["caption"] == captions[image["item_id"]]
        with Image.open(store.root / image["file_name"]) as picture:
            assert picture.size == (image["width"], image["height"])
    assert metadata["images_root"].path == str(store.root)


def test_re_exporting_replaces_the_folder_whole(published):
    store, _ = published
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([exports], partition_key="shapes", instance=instance, resources=RESOURCES).success
    export_dir = store.root / "shapes" / "exports"
    published = export_dir / "all"
    # The link, the one version it names and the marker of a shard folder: no staging or retired folder left.
    assert sorted(p.name for p in export_dir.iterdir()) == [".shards", os.readlink(published), "all"]
    assert sorted(p.name for p in published.iterdir()) == [
        "amc_grounding.json", "coco_grounding.json", "hf", "odvg.jsonl", "publish.json", "table.parquet", "webdataset"]


def test_a_recipe_without_boxes_fails_with_what_to_do(project_home):
    result = dg.materialize([exports], partition_key="shapes", instance=dg.DagsterInstance.ephemeral(),
                            resources=RESOURCES, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("exports")
    assert "recipe 'shapes' has no published boxes shard to export" in failure.error.message


def test_export_files_take_the_umask_permissions_so_other_users_can_read_them(published):
    store, _ = published
    umask = os.umask(0)
    os.umask(umask)
    for path in store.shard_dir("shapes", "exports", "all").rglob("*"):
        if path.is_dir():
            continue
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_the_hugging_face_parquet_export_loads_with_datasets_and_its_images_decode(published, tmp_path):
    import datasets

    store, metadata = published
    expected = published_boxes(store)
    folder = store.shard_dir("shapes", "exports", "all") / "hf"
    loaded = datasets.load_dataset("parquet", data_dir=str(folder / "data"), split="train", cache_dir=str(tmp_path))
    assert isinstance(loaded.features["image"], datasets.Image)
    assert len(loaded) == expected.item_id.nunique() == 128
    assert sum(len(boxes) for boxes in loaded["boxes"]) == len(expected) == metadata["boxes"].value
    first = loaded[0]
    assert first["image"].size == (first["width"], first["height"])
    wanted = expected.set_index("box_id").loc[first["box_ids"][0]]
    assert first["boxes"][0] == pytest.approx([wanted.x0, wanted.y0, wanted.x1, wanted.y1])
    assert first["phrases"][0] == wanted.phrase
    # The folder itself loads too: the card's YAML header names the files as the train split.
    assert len(datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path))) == 128
    card = (folder / "README.md").read_text()
    assert "recipe `shapes`" in card and "- images: 128" in card
    assert f"- boxes (phrase, box pairs): {len(expected)}" in card and "## Quality report" in card
    assert "| detector | adapter shapes | procedural, this project's code |" in card


def test_the_webdataset_tars_hold_an_image_and_a_json_per_sample_that_match_the_table(published):
    store, _ = published
    expected = published_boxes(store)
    folder = store.shard_dir("shapes", "exports", "all") / "webdataset"
    tars = sorted(folder.glob("shard-*.tar"))
    assert [t.name for t in tars] == ["shard-00000.tar"]
    with tarfile.open(tars[0]) as tar:
        names = tar.getnames()
        assert len(names) == 2 * 128 and sum(n.endswith(".json") for n in names) == 128
        record = json.loads(tar.extractfile(names[1]).read())
        assert names[:2] == [f"{webdataset_key(record['item_id'])}.png", f"{webdataset_key(record['item_id'])}.json"]
        with Image.open(tar.extractfile(names[0])) as picture:
            picture.load()
            assert picture.size == (record["width"], record["height"])
    wanted = expected.set_index("box_id").loc[record["box_ids"]]
    assert record["boxes"] == wanted[["x0", "y0", "x1", "y1"]].values.tolist()
    assert record["phrases"] == wanted.phrase.tolist()
    assert "WebDataset tar shards, 1 file(s)" in (folder / "README.md").read_text()


def test_the_dataset_card_names_every_model_of_the_recipe_and_says_when_no_quality_report_exists(project_home):
    recipe = recipe_book().get("tiny-concept2text")
    default_data_root().mkdir(parents=True)  # a data root with no shard published yet
    facts = card_facts(recipe, LineageResource(), ShardStore(default_data_root()), ["00000"])
    card = dataset_card(facts, [], 1, "Parquet", "")
    for role, spec in recipe.roles.items():
        model = spec.model or f"adapter {spec.adapter}"
        licence = "random weights built by this project" if model.startswith("tiny:") else "procedural"
        assert f"| {role} | {model} | {licence}" in card
    assert "No quality report was recorded for these shards." in card and "- images: 0" in card
