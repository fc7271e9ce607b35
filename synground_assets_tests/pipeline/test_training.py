"""The fine-tuning stage's decisions, without Dagster: rows from published shards, the held-out
split, the rank count, and the prepared working folder."""

from __future__ import annotations

import pandas as pd
import pytest

from synground_assets.config.recipes import Recipe, RecipeError, RoleSpec, TrainingSettings
from synground_assets.grounding.config import TrainConfig
from synground_assets.grounding.loader import TripletIndex
from synground_assets.pipeline.training import prepare_training, ranks_per_node, split_held_out, synthetic_rows
from synground_assets.resources.store import ShardStore, write_table


def recipe(max_steps: int = 1000, **training) -> Recipe:
    grounding = RoleSpec(adapter="blip", model="tiny:blip-itm-shapes")
    settings = TrainingSettings(config=TrainConfig(max_steps=max_steps), **training)
    return Recipe("r", "image2text", "detector", {}, grounding_model=grounding, training=settings)


def rows(count: int) -> pd.DataFrame:
    return pd.DataFrame({"image": [f"{i}.png" for i in range(count)], "phrase": ["a red square"] * count,
                         "x0": 0.0, "y0": 0.0, "x1": 8.0, "y1": 8.0, "item_id": [f"r:{i:05d}" for i in range(count)]})


def publish_shard(store: ShardStore, shard: str, items: int) -> None:
    """A boxes shard with two boxes per phrase (rank 0 and 1), its phrases and its images."""
    ids = [f"{shard}-{i}" for i in range(items)]
    tables = {
        "images": pd.DataFrame({"item_id": ids, "file": [f"{i}.png" for i in ids]}),
        "phrases": pd.DataFrame({"phrase_id": [f"p{i}" for i in ids], "item_id": ids,
                                 "phrase": ["a blue circle"] * items}),
        "boxes": pd.DataFrame({"phrase_id": [f"p{i}" for i in ids] * 2, "item_id": ids * 2,
                               "box_rank": [0] * items + [1] * items, "x0": 1.0, "y0": 2.0, "x1": 3.0, "y1": 4.0}),
    }
    for asset, table in tables.items():
        with store.writing("r", asset, shard) as folder:
            write_table(folder, table)


def test_synthetic_rows_keep_the_best_box_of_each_phrase_with_its_image_path(tmp_path):
    store = ShardStore(tmp_path)
    publish_shard(store, "00000", 3)
    publish_shard(store, "00001", 2)
    found, counts = synthetic_rows(store, "r")
    assert counts.values.tolist() == [["00000", 3], ["00001", 2]]
    assert len(found) == 5 and list(found.columns) == ["image", "phrase", "x0", "y0", "x1", "y1", "item_id"]
    assert found.image.iloc[0] == str(store.shard_dir("r", "images", "00000") / "00000-0.png")
    assert synthetic_rows(ShardStore(tmp_path / "empty"), "r")[0].empty


def test_the_held_out_split_is_stable_by_item_and_grows_with_new_items():
    train, held_out, source = split_held_out(recipe(held_out=0.2), rows(200))
    assert source == "20% of items" and len(train) + len(held_out) == 200 and 20 <= len(held_out) <= 60
    assert not set(train.item_id) & set(held_out.item_id)
    _, more_held_out, _ = split_held_out(recipe(held_out=0.2), rows(400))
    assert set(held_out.item_id) <= set(more_held_out.item_id)  # adding items moves no old one
    everything, queries, source = split_held_out(recipe(held_out="shapes_test", held_out_queries=5), rows(10))
    assert source == "shapes_test" and len(everything) == 10 and len(queries) == 5


def test_ranks_per_node_counts_visible_gpus_only_off_the_cpu():
    assert ranks_per_node(recipe(), "cuda", gpus=lambda: 4) == 4
    assert ranks_per_node(recipe(), "auto", gpus=lambda: 0) == 1
    assert ranks_per_node(recipe(), "cpu", gpus=lambda: 4) == 1
    assert ranks_per_node(recipe(nproc_per_node=2), "cpu") == 2


def test_prepare_training_indexes_train_and_held_out_rows_in_a_run_keyed_folder(tmp_path):
    store = ShardStore(tmp_path)
    publish_shard(store, "00000", 40)
    prepared = prepare_training(store, recipe(held_out=0.25, max_steps=7), gpus=lambda: 0)
    assert prepared.settings.max_steps == 7 and prepared.ranks == 1 and prepared.real_triplets == 0
    trained, held_out = TripletIndex.read(*prepared.index), TripletIndex.read(prepared.held_out_index)
    assert len(trained) == prepared.synthetic_triplets and len(trained) + len(held_out) == 40
    assert len(prepared.held_out_preview) == min(6, len(held_out))
    assert prepare_training(store, recipe(held_out=0.25, max_steps=7), gpus=lambda: 0).work == prepared.work
    assert prepare_training(store, recipe(held_out=0.25), 9, gpus=lambda: 0).work != prepared.work
    # A run-time batch size (FinetuneConfig.batch_size, make demo) is part of the run: a folder of its own.
    smaller = prepare_training(store, recipe(held_out=0.25, max_steps=7), batch_size=16, gpus=lambda: 0)
    assert smaller.settings.batch_size == 16 and smaller.settings.max_steps == 7 and smaller.work != prepared.work
    assert prepared.settings.batch_size == recipe().training.config.batch_size
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        prepare_training(store, recipe(held_out=0.25), batch_size=1, gpus=lambda: 0)
    with pytest.raises(RecipeError, match="no published boxes shard"):
        prepare_training(ShardStore(tmp_path / "empty"), recipe(), gpus=lambda: 0)
