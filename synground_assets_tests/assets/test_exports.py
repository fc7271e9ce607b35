"""The `exports` asset: a recipe's published shards as COCO, ODVG and AMC files that read back whole."""

import hashlib
import json
import os
import stat
import tarfile
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from PIL import Image

from synground_assets.adapters.suite import model_suite
from synground_assets.assets.exports import card_facts, data_licence, exports
from synground_assets.config.recipes import BUILTIN_RECIPES, _cached_book, load_recipe_book, recipe_book
from synground_assets.datasets.exports import read_amc_grounding, read_coco_grounding, read_odvg
from synground_assets.datasets.hub_formats import dataset_card, webdataset_key
from synground_assets.datasets.release import verify_manifest
from synground_assets.definitions import GENERATION_ASSETS
from synground_assets.resources import LineageResource, ModelSuiteResource, StoreResource
from synground_assets.resources.store import ShardStore, default_data_root

RESOURCES = {"store": StoreResource(), "suite": ModelSuiteResource(), "lineage": LineageResource()}
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


def published_boxes(store: ShardStore, shards=("00000", "00001")) -> pd.DataFrame:
    """What the shards hold: every box joined to its phrase and image, as the exports should carry
    (image paths as the export holds them: `images/<shard>/...` inside the export folder)."""
    frames = []
    for shard in shards:
        boxes = store.read_table("shapes", "boxes", shard)
        phrases = store.read_table("shapes", "phrases", shard)[["phrase_id", "phrase"]]
        images = store.read_table("shapes", "images", shard)[["item_id", "image_path", "width", "height"]]
        images["image_path"] = [f"images/{shard}/" + path.removeprefix(f"shapes/images/{shard}/")
                                for path in images.image_path]
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


def test_export_captions_are_the_descriptions_and_image_paths_open_from_the_export_folder(published):
    store, metadata = published
    folder = store.shard_dir("shapes", "exports", "all")
    descriptions = pd.concat(store.read_table("shapes", "descriptions", s) for s in ["00000", "00001"])
    captions = dict(zip(descriptions.item_id, descriptions.description))
    document = json.loads((folder / "coco_grounding.json").read_text())
    for image in document["images"]:
        assert image["caption"] == captions[image["item_id"]]
        with Image.open(folder / image["file_name"]) as picture:
            assert picture.size == (image["width"], image["height"])
    for line in (folder / "odvg.jsonl").read_text().splitlines()[:10]:
        assert (folder / json.loads(line)["filename"]).is_file()
    assert all((folder / entry["image"]).is_file() for entry in json.loads((folder / "amc_grounding.json").read_text()))
    assert metadata["images_root"].path == str(folder)


def test_re_exporting_replaces_the_folder_whole(published):
    store, _ = published
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([exports], partition_key="shapes", instance=instance, resources=RESOURCES).success
    export_dir = store.root / "shapes" / "exports"
    published = export_dir / "all"
    # The link, the one version it names and the marker of a shard folder: no staging or retired folder left.
    assert sorted(p.name for p in export_dir.iterdir()) == [".shards", os.readlink(published), "all"]
    assert sorted(p.name for p in published.iterdir()) == [
        "amc_grounding.json", "coco_grounding.json", "hf", "images", "manifest.json", "odvg.jsonl", "publish.json",
        "table.parquet", "webdataset"]


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


# ---- releases: a manifest, images inside, immutability, verified images, loaders -------------


def export_folder(store: ShardStore) -> Path:
    """The version folder the export's link names (what a finished release is)."""
    return store.shard_dir("shapes", "exports", "all").resolve()


def release_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file of the export, and of every image its COCO, ODVG and AMC files name,
    resolved from the export folder (as a trainer given the folder would open them)."""
    digests = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(folder.rglob("*")) if p.is_file()}
    coco = json.loads((folder / "coco_grounding.json").read_text())
    odvg = [json.loads(line) for line in (folder / "odvg.jsonl").read_text().splitlines()]
    amc = json.loads((folder / "amc_grounding.json").read_text())
    named = ({i["file_name"] for i in coco["images"]} | {r["filename"] for r in odvg} | {e["image"] for e in amc})
    for path in sorted(named):
        digests[f"named:{path}"] = hashlib.sha256((folder / path).read_bytes()).hexdigest()
    return digests


def test_the_manifest_names_the_shard_versions_read_and_every_file_digest(published):
    store, metadata = published
    folder = export_folder(store)
    manifest = json.loads((folder / "manifest.json").read_text())
    for shard in ["00000", "00001"]:
        for asset in ["images", "descriptions", "phrases", "boxes"]:
            pinned = store.pin("shapes", asset, shard)
            assert manifest["shards"][shard][asset] == {"publish_id": pinned.publish_id, "version": pinned.version}
            assert json.loads((pinned.folder / "publish.json").read_text())["publish_id"] == pinned.publish_id
    assert manifest["counts"] == {"images": 128, "phrases": metadata["phrases"].value,
                                  "boxes": metadata["boxes"].value, "phrases_without_box": 0}
    assert manifest["code_version"]["package"].startswith("0.1.0") and manifest["code_version"]["exports_asset"]
    assert manifest["recipe"] == "shapes" and manifest["created_at"].startswith("20")
    assert manifest["skipped_images"] == [] and metadata["skipped_images"].value == 0
    assert manifest["images"]["mode"] == "hardlink" and manifest["images"]["hardlinked"] == 128
    assert verify_manifest(folder) == []
    assert len([name for name in manifest["files"] if name.startswith("images/")]) == 128
    # The digests are of the bytes: a changed file is found.
    table = folder / "table.parquet"
    assert manifest["files"]["table.parquet"]["sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()


def test_the_export_holds_its_images_as_hard_links_and_no_symbolic_link(published):
    store, _ = published
    folder = export_folder(store)
    for path in folder.rglob("*"):
        assert not path.is_symlink(), path
    # FiftyOne-style listing (os.scandir, links not followed) sees the images as regular files.
    listed = [entry for entry in os.scandir(folder / "images" / "00000" / "images")]
    assert len(listed) == 64 and all(entry.is_file(follow_symlinks=False) for entry in listed)
    source = store.pin("shapes", "images", "00000").folder / "images" / listed[0].name
    assert os.stat(listed[0].path).st_ino == source.stat().st_ino  # one copy of the bytes on disk


def test_the_export_loads_with_webdataset(published):
    import webdataset as wds

    store, _ = published
    expected = published_boxes(store)
    tar = export_folder(store) / "webdataset" / "shard-00000.tar"
    loaded = list(wds.WebDataset(str(tar), shardshuffle=False, empty_check=False).decode("pil"))
    assert len(loaded) == 128
    for sample in loaded:
        record = sample["json"]
        assert sample["png"].size == (record["width"], record["height"])
        assert len(record["phrase_ids"]) == len(record["phrases"]) == len(record["boxes"])
    assert sum(len(s["json"]["boxes"]) for s in loaded) == len(expected)


def test_the_dataset_cards_carry_the_hub_metadata(published):
    store, _ = published
    for sub in ["hf", "webdataset"]:
        card = (export_folder(store) / sub / "README.md").read_text()
        header = yaml.safe_load(card.split("---")[1])
        assert header["license"] == ["other"] and header["license_name"] == "synground-procedural"
        assert header["task_categories"] == ["object-detection", "zero-shot-object-detection"]
        assert header["size_categories"] == ["n<1K"] and header["language"] == ["en"]
        assert header["pretty_name"] == "SynGround triplets (shapes)"
        assert "no model licence applies" in card
        assert "Images left out of this export because they did not open, verify or decode: 0." in card
    assert "configs" in yaml.safe_load((export_folder(store) / "hf" / "README.md").read_text().split("---")[1])


def test_the_data_licence_combines_the_licences_of_the_models_that_made_the_data():
    book = recipe_book()
    # The converted GLIP folder is a local path: its weights' terms are on the card of where they came from.
    paper = data_licence(book.get("paper-image2text"))
    assert paper.ids == ["llama2", "openrail++", "other"] and "models/glip-tiny" in paper.details
    assert data_licence(book.get("paper-image2text-gdino")).ids == ["apache-2.0", "llama2", "openrail++"]
    assert data_licence(book.get("tiny-ensemble")).ids == ["other"]  # all tiny: procedural
    gligen = data_licence(book.get("paper-gligen"))  # GLIGEN's licence is not known here: its card must be read
    assert "other" in gligen.ids and "masterful/gligen-1-4-generation-text-box" in gligen.details
    assert "llama2" in gligen.ids  # Vicuna: the phrase extractor and the generator's layout LLM
    assert data_licence(book.get("tiny-concept2text")).ids == ["other"]


def test_every_detector_of_an_ensemble_counts_in_the_data_licence(tmp_path):
    text = BUILTIN_RECIPES.read_text().replace(
        '- {name: gdino-top1, adapter: zero-shot-detector, model: "tiny:grounding-dino"',
        '- {name: gdino-top1, adapter: zero-shot-detector, model: "IDEA-Research/grounding-dino-base"')
    (tmp_path / "recipes.yaml").write_text(text)
    licence = data_licence(load_recipe_book(tmp_path / "recipes.yaml").get("tiny-ensemble"))
    assert licence.ids == ["apache-2.0"]  # the second detector's, although the first is a tiny model


@pytest.fixture
def lone_shard(project_home):
    """One shapes shard materialized through Dagster, in this test's own data root."""
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(GENERATION_ASSETS, partition_key="shapes|00000", instance=instance,
                          resources=RESOURCES).success
    return ShardStore(default_data_root()), instance


def test_an_export_survives_re_materialization_of_its_shards_unchanged(lone_shard, tmp_path, monkeypatch):
    store, instance = lone_shard
    assert dg.materialize([exports], partition_key="shapes", instance=instance, resources=RESOURCES).success
    folder = export_folder(store)
    before = release_digest(folder)
    old_images = store.pin("shapes", "images", "00000").folder
    # Rematerialize the upstream shards with other content: the recipe now draws 96 px images.
    book = yaml.safe_load(Path(BUILTIN_RECIPES).read_text())
    book["recipes"]["shapes"]["roles"]["image_generator"]["options"]["size"] = 96
    (tmp_path / "recipes.yaml").write_text(yaml.safe_dump(book, sort_keys=False))
    monkeypatch.setenv("SYNGROUND_RECIPES", str(tmp_path / "recipes.yaml"))
    _cached_book.cache_clear()
    model_suite().clear()
    try:
        assert dg.materialize(GENERATION_ASSETS, partition_key="shapes|00000", instance=instance,
                              resources=RESOURCES).success
    finally:
        monkeypatch.delenv("SYNGROUND_RECIPES")
        _cached_book.cache_clear()
        model_suite().clear()
    assert not old_images.exists()  # the version the export was built from is gone from the store
    assert set(store.read_table("shapes", "images", "00000").width) == {96}
    assert store.pin("shapes", "boxes", "00000").publish_id != json.loads(
        (folder / "manifest.json").read_text())["shards"]["00000"]["boxes"]["publish_id"]
    assert export_folder(store) == folder
    assert release_digest(folder) == before
    assert verify_manifest(folder) == []
    coco = json.loads((folder / "coco_grounding.json").read_text())
    with Image.open(folder / coco["images"][0]["file_name"]) as picture:
        assert picture.size == (128, 128)


def test_corrupt_images_are_skipped_and_recorded_and_the_export_still_succeeds(lone_shard, tmp_path):
    import datasets
    import webdataset as wds

    store, instance = lone_shard
    images = store.read_table("shapes", "images", "00000")
    version = store.pin("shapes", "images", "00000").folder
    truncated, empty = images.item_id.iloc[3], images.item_id.iloc[5]
    for item_id, keep in ((truncated, 0.5), (empty, 0.0)):
        path = version / images.set_index("item_id").loc[item_id, "file"]
        data = path.read_bytes()
        staging = path.with_suffix(".tmp")
        staging.write_bytes(data[:int(len(data) * keep)])
        os.replace(staging, path)  # a new file: nothing else shares the broken bytes
    config = {"ops": {"exports": {"config": {"images": "copy"}}}}
    result = dg.materialize([exports], partition_key="shapes", instance=instance, resources=RESOURCES,
                            run_config=config)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    folder = export_folder(store)
    manifest = json.loads((folder / "manifest.json").read_text())
    reasons = {s["item_id"]: s["reason"] for s in manifest["skipped_images"]}
    assert reasons.keys() == {truncated, empty} and metadata["skipped_images"].value == 2
    assert reasons[empty] == "empty file (0 bytes)"
    assert reasons[truncated].startswith("does not decode (OSError") and "truncated" in reasons[truncated].lower()
    assert manifest["images"] == {"folder": "images", "mode": "copy", "hardlinked": 0, "copied": 62,
                                  "bytes": manifest["images"]["bytes"]}
    for sub in ["hf", "webdataset"]:
        card = (folder / sub / "README.md").read_text()
        assert "did not open, verify or decode: 2." in card
        assert f"| {empty} | " in card and "empty file (0 bytes)" in card and f"| {truncated} | " in card
    coco = json.loads((folder / "coco_grounding.json").read_text())
    assert len(coco["images"]) == 62 and {truncated, empty}.isdisjoint(i["item_id"] for i in coco["images"])
    loaded = datasets.load_dataset("parquet", data_dir=str(folder / "hf" / "data"), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert len(loaded) == 62 and all(row["image"].size == (128, 128) for row in loaded)
    tar = str(folder / "webdataset" / "shard-00000.tar")
    assert len(list(wds.WebDataset(tar, shardshuffle=False, empty_check=False).decode("pil"))) == 62


def test_an_export_that_fails_midway_leaves_the_previous_release_whole_and_no_half_written_one(
        lone_shard, monkeypatch):
    from synground_assets.assets import exports as exports_module

    store, instance = lone_shard
    assert dg.materialize([exports], partition_key="shapes", instance=instance, resources=RESOURCES).success
    folder = export_folder(store)
    before = release_digest(folder)

    def crash(*args, **kwargs):
        raise RuntimeError("disk went away while writing the tars")

    monkeypatch.setitem(exports_module.HUB_WRITERS, "webdataset", crash)
    result = dg.materialize([exports], partition_key="shapes", instance=instance, resources=RESOURCES,
                            raise_on_error=False)
    assert not result.success
    assert export_folder(store) == folder and release_digest(folder) == before
    export_dir = store.root / "shapes" / "exports"
    assert sorted(p.name for p in export_dir.iterdir()) == [".shards", folder.name, "all"]
