"""The shard store publishes whole shards only."""

import pandas as pd
import pytest

from synground_assets.resources.store import ShardStore, write_table


def test_a_written_shard_is_published_whole(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("r", "boxes", "00001") as folder:
        write_table(folder, pd.DataFrame({"a": [1, 2]}))
        (folder / "extra.bin").write_bytes(b"x")
    assert store.shards("r", "boxes") == ["00001"]
    assert store.read_table("r", "boxes", "00001").a.tolist() == [1, 2]
    assert [p.name for p in (tmp_path / "r" / "boxes").iterdir()] == ["00001"]


def test_an_exception_mid_write_leaves_no_partial_shard_and_keeps_the_old_one(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("r", "boxes", "00001") as folder:
        write_table(folder, pd.DataFrame({"a": [1]}))
    with pytest.raises(RuntimeError, match="disk on fire"):
        with store.writing("r", "boxes", "00001") as folder:
            write_table(folder, pd.DataFrame({"a": [9, 9, 9]}))
            raise RuntimeError("disk on fire")
    assert store.read_table("r", "boxes", "00001").a.tolist() == [1]  # the old shard, whole
    assert [p.name for p in (tmp_path / "r" / "boxes").iterdir()] == ["00001"]  # no leftovers


def test_a_crashed_first_write_publishes_nothing(tmp_path):
    store = ShardStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with store.writing("r", "images", "00000") as folder:
            (folder / "images").mkdir()
            raise KeyboardInterrupt
    assert store.shards("r", "images") == []
    assert not store.has_shard("r", "images", "00000")


def test_a_rerun_replaces_the_shard_whole(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("r", "images", "00000") as folder:
        (folder / "old.png").write_bytes(b"old")
        write_table(folder, pd.DataFrame({"a": [1]}))
    with store.writing("r", "images", "00000") as folder:
        write_table(folder, pd.DataFrame({"a": [2]}))
    assert not (store.shard_dir("r", "images", "00000") / "old.png").exists()
    assert store.read_table("r", "images", "00000").a.tolist() == [2]


def test_a_crash_between_the_two_renames_is_repaired_by_the_next_write(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("r", "boxes", "00002") as folder:
        write_table(folder, pd.DataFrame({"a": [1]}))
    final = store.shard_dir("r", "boxes", "00002")
    final.rename(final.parent / ".old-00002-deadbeef")  # the state a crash mid-publish leaves
    with pytest.raises(ValueError):
        with store.writing("r", "boxes", "00002"):
            raise ValueError("interrupted again")
    assert store.read_table("r", "boxes", "00002").a.tolist() == [1]


def test_reading_a_missing_shard_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="dagster asset materialize .* --partition 'r\\|00007'"):
        ShardStore(tmp_path).read_table("r", "phrases", "00007")
