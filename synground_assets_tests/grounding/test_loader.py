"""The columnar index, the step-indexed batch plan split by rank, and the worker-process loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synground_assets.grounding.data import Augmentation
from synground_assets.grounding.loader import (
    BatchPlan,
    TripletIndex,
    make_batch,
    make_loader,
    phrase_key,
    write_index,
    write_triplets_index,
)
from synground_assets_tests.grounding.conftest import shapes_triplets


@pytest.fixture(scope="module")
def index_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("index")
    write_triplets_index(shapes_triplets(6, first_seed=0), folder, "synthetic")
    write_triplets_index(shapes_triplets(3, first_seed=100), folder, "real")
    return folder


@pytest.fixture(scope="module")
def index(index_folder):
    return TripletIndex.read(index_folder / "synthetic.parquet", index_folder / "real.parquet")


def test_index_holds_columns_and_gives_back_the_triplets(index, index_folder):
    synthetic = shapes_triplets(6, first_seed=0)
    assert len(index.rows_by_source["synthetic"]) == len(synthetic)
    first = index.triplet(0)
    assert first.phrase == synthetic[0].phrase and first.boxes_xyxy == synthetic[0].boxes_xyxy
    assert isinstance(index.image_ids, np.ndarray) and index.boxes.dtype == np.float32
    # Phrases of one shapes image share its image id; each image file is stored once.
    assert len(index.image_paths) == 9 and index.image_ids.max() == 8
    assert index.nbytes() < 20_000


def test_index_refuses_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="x1 > x0"):
        TripletIndex.read(write_index(tmp_path / "i.parquet", ["a.png"], ["a cat"], np.array([[5, 0, 1, 2]])))
    with pytest.raises(ValueError, match="unknown source"):
        TripletIndex.read(write_index(tmp_path / "j.parquet", ["a.png"], ["a cat"], [[(0, 0, 1, 1)]], "web"))


def test_plan_depends_only_on_the_step_covers_each_epoch_and_splits_by_rank(index):
    plan, again = BatchPlan(index, 4, seed=1), BatchPlan(index, 4, seed=1)
    assert again.global_batch(7) == plan.global_batch(7)
    # Two ranks with 2 each see together exactly the batch of one rank with 4, in order.
    assert plan.rank_batch(7, 0, 2) + plan.rank_batch(7, 1, 2) == plan.global_batch(7)
    epoch = [row for step in range(len(index.rows_by_source["synthetic"]) // 4) for row, _ in plan.global_batch(step)]
    assert len(set(epoch)) == len(epoch)


def test_plan_mixes_real_triplets_at_the_ratio(index):
    real = set(index.rows_by_source["real"].tolist())
    batch = BatchPlan(index, 8, seed=0, real_ratio=0.25).global_batch(3)
    assert sum(row in real for row, _ in batch) == 2 and len(batch) == 8


def test_the_loader_gives_the_same_batches_with_0_and_2_workers_and_from_a_resumed_step(index, tiny_model):
    plan = BatchPlan(index, 4, seed=3)
    augmentation = Augmentation(horizontal_flip=True)

    def batches(workers: int, start: int, rank: int = 0, world: int = 1):
        loader = make_loader(index, plan, tiny_model.preprocessor(), 64, augmentation, (start, 5), rank, world, workers)
        return list(loader)

    in_process, two_workers, resumed = batches(0, 0), batches(2, 0), batches(2, 3)
    assert len(in_process) == 5
    for a, b in zip(in_process, two_workers, strict=True):
        for name in ("masks", "image_ids", "phrase_keys"):
            assert torch.equal(getattr(a, name), getattr(b, name))
        assert torch.equal(a.inputs.pixel_values, b.inputs.pixel_values)
        assert torch.equal(a.inputs.input_ids, b.inputs.input_ids)
    assert torch.equal(resumed[0].inputs.pixel_values, in_process[3].inputs.pixel_values)
    rank_1 = batches(0, 0, rank=1, world=2)
    assert torch.equal(rank_1[2].inputs.pixel_values, in_process[2].inputs.pixel_values[2:])


def test_make_batch_builds_masks_at_the_input_resolution(tiny_model):
    triplets = shapes_triplets(2, first_seed=7)
    batch = make_batch(tiny_model.preprocessor(), triplets, list(range(len(triplets))), None, 64)
    assert batch.inputs.pixel_values.shape == (len(triplets), 3, 64, 64)
    assert batch.masks.shape == (len(triplets), 64, 64)
    x0, y0, x1, y1 = (int(v) for v in triplets[0].boxes_xyxy[0])
    assert batch.masks[0].sum() == (x1 - x0) * (y1 - y0) and batch.masks[0, y0, x0] == 1
    assert batch.phrase_keys[0] == phrase_key(triplets[0].phrase)


def test_phrase_keys_ignore_case_and_spacing():
    assert phrase_key("A  red Circle") == phrase_key("a red circle") != phrase_key("a red square")
