"""A corrupt fine-tuned checkpoint fails with the folder and the partition to rematerialize (issue 30, item 8)."""

from __future__ import annotations

import shutil

import pytest

from synground_assets.adapters.loading import ModelLoadError
from synground_assets.config.recipes import Recipe
from synground_assets.pipeline.scoring import load_finetuned
from synground_assets.resources.store import ShardStore
from synground_assets.tiny.grounding import build_tiny_blip


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"), seed=0)


def publish_checkpoint(store: ShardStore, source, cut_to: int | None) -> None:
    with store.writing("mine", "finetuned_checkpoint", "model") as folder:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        if cut_to is not None:  # a copy cut short (a full disk, a killed rsync)
            weights = folder / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:cut_to])


@pytest.mark.parametrize("cut_to", [0, 5, 4096])  # empty, inside the header length, inside the tensors
def test_a_truncated_checkpoint_names_its_folder_and_the_partition_to_rematerialize(tmp_path, tiny_blip, cut_to):
    store = ShardStore(tmp_path / "data")
    publish_checkpoint(store, tiny_blip, cut_to)
    with pytest.raises(ModelLoadError) as error:
        load_finetuned(store, Recipe("mine", "image2text", "detector", {}), "cpu")
    message = str(error.value)
    assert str(store.shard_dir("mine", "finetuned_checkpoint", "model")) in message
    assert "rematerialize finetuned_checkpoint partition 'mine'" in message
    assert "--select finetuned_checkpoint --partition 'mine'" in message


def test_a_whole_checkpoint_loads(tmp_path, tiny_blip):
    store = ShardStore(tmp_path / "data")
    publish_checkpoint(store, tiny_blip, None)
    assert load_finetuned(store, Recipe("mine", "image2text", "detector", {}), "cpu") is not None
