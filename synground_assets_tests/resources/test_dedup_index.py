"""Cross-shard dedup from the lineage index gives the answer a scan of every earlier shard gives,
whether the index is current, lagging (new or re-published shards), or absent."""

import duckdb
import pandas as pd
import pytest

from synground_assets.quality.images import find_near_duplicates, hash_bits
from synground_assets.quality.text import description_key, find_duplicate_texts
from synground_assets.resources.dedup_index import earlier_descriptions, earlier_image_hashes
from synground_assets.resources.dedup_tables import band_keys, dedup_distances
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
    assert set(only_matches.item_id) == {"r:00000:0001"}  # the earliest match only, not every earlier image


def test_a_lagging_index_is_completed_from_the_files(store, tmp_path):
    index = tmp_path / "data" / "lineage.duckdb"
    Lineage(index).refresh(store.root)
    publish(store, "00000", ["1234123412341234", "0f0f0f0f0f0f0f0f"], ["x", "y"])  # re-published after
    publish(store, "00002", ["ffff0000ffff0003", "7777777777777777"], ["a red square", "z"])  # new
    expected = full_scan(store)
    assert expected == ({"r:00003:0000": ("r:00001:0000", 1)}, {"r:00003:0000": "r:00001:0000"})
    assert answers(store, index) == expected


def listings(monkeypatch) -> list[str]:
    """The asset folders listed from now on (one readlink per shard each)."""
    listed = []
    real = ShardStore.asset_folder

    def asset_folder(self, recipe, asset, **options):
        listed.append(asset)
        return real(self, recipe, asset, **options)

    monkeypatch.setattr(ShardStore, "asset_folder", asset_folder)
    return listed


def test_an_index_current_with_the_folder_answers_without_listing_it(store, tmp_path, monkeypatch):
    index = tmp_path / "data" / "lineage.duckdb"
    Lineage(index).refresh(store.root)
    listed = listings(monkeypatch)
    assert answers(store, index) == full_scan(store)
    assert listed == []  # the folders' stamps are those the refresh recorded


def test_a_shard_published_after_the_refresh_is_read_from_its_files(store, tmp_path, monkeypatch):
    index = tmp_path / "data" / "lineage.duckdb"
    Lineage(index).refresh(store.root)
    publish(store, "00002", ["ffff0000ffff0003", "7777777777777777"], ["a red square", "z"])  # not indexed
    listed = listings(monkeypatch)
    assert answers(store, index) == full_scan(store)
    assert listed == ["images", "descriptions"]  # the stamps moved: the folders are listed
    images = earlier_image_hashes(store, index, "r", "00003", [h for _, h in NEW_HASHES], 4)
    assert "r:00002:0000" in set(images.item_id)  # read from the files: the index does not have it


def test_a_stamp_that_moved_for_any_reason_falls_back_to_listing(store, tmp_path, monkeypatch):
    index = tmp_path / "data" / "lineage.duckdb"
    Lineage(index).refresh(store.root)
    with open(store.root / "r" / "images" / ".shards", "ab") as marker:  # e.g. a publish that crashed after it
        marker.write(b".")
    listed = listings(monkeypatch)
    assert answers(store, index) == full_scan(store)
    assert listed == ["images"]


@pytest.mark.parametrize("moment", ["while listing the folder", "after listing every folder"])
def test_a_publish_while_the_refresh_lists_the_folder_leaves_its_stamp_stale(store, tmp_path, monkeypatch, moment):
    """The race: the refresh reads each folder's stamp before listing it, so a shard published once
    the listing began (and not indexed) moves the stamp past the recorded one, never into a false match."""
    index = tmp_path / "data" / "lineage.duckdb"
    late = ("00002", ["ffff0000ffff0003", "7777777777777777"], ["a red square", "z"])
    if moment == "while listing the folder":  # the folder's entries read, its first link being resolved
        real_entry = ShardStore._published_entry

        def entry(*args):
            if not (store.root / "r" / "images" / "00002").is_symlink():
                publish(store, *late)
            return real_entry(*args)

        monkeypatch.setattr(ShardStore, "_published_entry", staticmethod(entry))
    else:
        real = ShardStore.asset_folders

        def listed_then_published(self):
            folders = list(real(self))
            publish(store, *late)
            return iter(folders)

        monkeypatch.setattr(ShardStore, "asset_folders", listed_then_published)
    Lineage(index).refresh(store.root)
    monkeypatch.undo()
    indexed = Lineage(index).query("SELECT asset FROM indexed_shards WHERE shard = '00002'").asset.tolist()
    assert "images" not in indexed  # the listing did not see it
    expected = full_scan(store)
    assert expected == ({"r:00003:0000": ("r:00000:0001", 2)}, {"r:00003:0000": "r:00000:0001"})
    images = earlier_image_hashes(store, index, "r", "00003", [h for _, h in NEW_HASHES], 4)
    assert "r:00002:0000" in set(images.item_id) and answers(store, index) == expected


def test_a_shard_the_index_cannot_answer_for_is_read_from_its_files(store, tmp_path):
    """A plain folder of the layout before links, and a version indexed before the lookup column."""
    index = tmp_path / "data" / "lineage.duckdb"
    legacy = store.shard_dir("r", "images", "00002")
    legacy.mkdir()
    write_table(legacy, pd.DataFrame({"item_id": ["r:00002:0000"], "phash": ["ffff0000ffff0002"]}))
    with store.writing("r", "descriptions", "00002") as folder:  # lineage without description_key
        write_table(folder, pd.DataFrame({"item_id": ["r:00002:0000"], "description": ["a red square"]}))
        write_shard_lineage(folder, {"descriptions": pd.DataFrame(
            {"item_id": ["r:00002:0000"], "description": ["a red square"], "shard": "00002", **COMMON})})
    Lineage(index).refresh(store.root)
    assert Lineage(index).query("SELECT shard FROM incomplete_versions").shard.tolist() == ["00002"]
    assert answers(store, index) == full_scan(store)
    images = earlier_image_hashes(store, index, "r", "00003", [h for _, h in NEW_HASHES], 4)
    texts = earlier_descriptions(store, index, "r", "00003", [description_key(t) for _, t in NEW_TEXTS])
    assert "r:00002:0000" in set(images.item_id) and "r:00002:0000" in set(texts.item_id)


def test_the_bands_table_holds_each_hash_in_the_bands_of_each_distance_in_use(store, tmp_path):
    index = tmp_path / "data" / "lineage.duckdb"
    Lineage(index).refresh(store.root, band_distances={4, 9})
    bands = Lineage(index).query("SELECT distance, key, phash, item_id FROM image_bands")
    assert sorted(bands.groupby("distance").size().items()) == [(4, 4 * 5), (9, 4 * 10)]  # 4 images x (d + 1)
    for row in bands.itertuples():
        assert row.key in band_keys(int(row.phash, 16), row.distance)
    Lineage(index).refresh(store.root, band_distances={4})
    assert set(Lineage(index).query("SELECT DISTINCT distance FROM image_bands").distance) == {4}
    assert dedup_distances() == {4}  # the built-in recipes' distance


@pytest.mark.parametrize("distance", [0, 1, 4, 9, 20])
def test_banded_and_unbanded_distances_answer_as_a_scan_does(store, tmp_path, distance):
    index = tmp_path / "data" / "lineage.duckdb"
    publish(store, "00002", ["ffff0000ffff00ff", "ffff000fffff0000"], ["x", "y"])
    earlier = earlier_shard_rows(store, "r", "images", "00003", ["item_id", "phash"])
    expected = find_near_duplicates(NEW_HASHES, list(zip(earlier.item_id, earlier.phash)), distance)
    for banded in ({distance}, {distance + 1}):  # precomputed bands; bands computed on the fly
        Lineage(index).refresh(store.root, band_distances=banded)
        found = earlier_image_hashes(store, index, "r", "00003", [h for _, h in NEW_HASHES], distance)
        assert find_near_duplicates(NEW_HASHES, list(zip(found.item_id, found.phash)), distance) == expected


def test_an_index_of_another_schema_is_rebuilt_and_meanwhile_left_to_the_files(store, tmp_path):
    index = tmp_path / "data" / "lineage.duckdb"
    Lineage(index).refresh(store.root)
    with duckdb.connect(str(index)) as connection:  # as an index last written by older code leaves it
        connection.execute("UPDATE index_schema SET fingerprint = 'older'")
        connection.execute("DROP TABLE image_bands")
        connection.execute("CREATE TABLE image_bands (recipe VARCHAR, band UTINYINT)")
    assert answers(store, index) == full_scan(store)  # the files answer
    Lineage(index).refresh(store.root)
    assert answers(store, index) == full_scan(store)
    assert Lineage(index).query("SELECT count(*) AS n FROM image_bands").n[0] == 4 * 5
