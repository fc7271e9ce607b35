"""Cross-shard dedup from the lineage index gives the answer a scan of every earlier shard gives,
whether the index is current, lagging (new or re-published shards), or absent."""

import pandas as pd
import pytest

from synground_assets.quality.images import find_near_duplicates, hash_bits
from synground_assets.quality.text import description_key, find_duplicate_texts
from synground_assets.resources.dedup_index import earlier_descriptions, earlier_image_hashes
from synground_assets.resources.lineage import Lineage, write_shard_lineage
from synground_assets.resources.published import earlier_shard_rows
from synground_assets.resources.store import ShardStore, write_table

COMMON = {"recipe": "r", "partition_key": "", "run_id": "test", "code_version": "", "adapter": "", "model_id": "",
          "revision": "", "settings": "{}"}


def publish(store: ShardStore, shard: str, hashes: list[str], texts: list[str]) -> None:
    """An images and a descriptions shard with the lineage rows the stages write."""
    ids = [f"r:{shard}:{i:04d}" for i in range(len(hashes))]
    images = pd.DataFrame({"item_id": ids, "phash": hashes})
    descriptions = pd.DataFrame({"item_id": ids, "description": texts})
    for asset, table, lineage in (
            ("images", images, images.assign(phash_bits=hash_bits(images.phash))),
            ("descriptions", descriptions,
             descriptions.assign(description_key=descriptions.description.map(description_key)))):
        with store.writing("r", asset, shard) as folder:
            write_table(folder, table)
            write_shard_lineage(folder, {asset: lineage.assign(shard=shard, **COMMON)})


NEW_HASHES = [("r:00003:0000", "ffff0000ffff0003"), ("r:00003:0001", "0123456789abcdef")]
NEW_TEXTS = [("r:00003:0000", "A red square!"), ("r:00003:0001", "Something new.")]


def answers(store, index):
    images = earlier_image_hashes(store, index, "r", "00003", [h for _, h in NEW_HASHES], 4)
    texts = earlier_descriptions(store, index, "r", "00003", [description_key(t) for _, t in NEW_TEXTS])
    return (find_near_duplicates(NEW_HASHES, list(zip(images.item_id, images.phash)), 4),
            find_duplicate_texts(NEW_TEXTS, list(zip(texts.item_id, texts.description))))


def full_scan(store):
    images = earlier_shard_rows(store, "r", "images", "00003", ["item_id", "phash"])
    texts = earlier_shard_rows(store, "r", "descriptions", "00003", ["item_id", "description"])
    return (find_near_duplicates(NEW_HASHES, list(zip(images.item_id, images.phash)), 4),
            find_duplicate_texts(NEW_TEXTS, list(zip(texts.item_id, texts.description))))


@pytest.fixture
def store(tmp_path):
    store = ShardStore(tmp_path / "data")
    publish(store, "00000", ["0000000000000000", "ffff0000ffff0000"], ["a blue circle", "a red square"])
    publish(store, "00001", ["ffff0000ffff0001", "8000000000000000"], ["A red  square.", "two"])
    return store


def test_the_index_answers_as_a_scan_of_every_shard_does(store, tmp_path):
    index = tmp_path / "data" / "lineage.duckdb"
    expected = full_scan(store)
    assert expected == ({"r:00003:0000": ("r:00000:0001", 2)}, {"r:00003:0000": "r:00000:0001"})
    assert answers(store, index) == expected  # no index yet: the files answer
    Lineage(index).refresh(store.root)
    assert answers(store, index) == expected
    only_matches = earlier_image_hashes(store, index, "r", "00003", [h for _, h in NEW_HASHES], 4)
    assert set(only_matches.item_id) == {"r:00000:0001", "r:00001:0000"}  # not every earlier image


def test_a_lagging_index_is_completed_from_the_files(store, tmp_path):
    index = tmp_path / "data" / "lineage.duckdb"
    Lineage(index).refresh(store.root)
    publish(store, "00000", ["1234123412341234", "0f0f0f0f0f0f0f0f"], ["x", "y"])  # re-published after
    publish(store, "00002", ["ffff0000ffff0003", "7777777777777777"], ["a red square", "z"])  # new
    expected = full_scan(store)
    assert expected == ({"r:00003:0000": ("r:00001:0000", 1)}, {"r:00003:0000": "r:00001:0000"})
    assert answers(store, index) == expected
