"""The shard store publishes whole shards only, whoever writes them and however many at once."""

import json
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from synground_assets.resources.store import ORPHAN_AFTER_S, CorruptShardError, ShardStore, UnsafePathError, write_table


def entries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_written_shard_is_published_whole_with_its_manifest(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("r", "boxes", "00001", run_id="0123abcd-run") as folder:
        write_table(folder, pd.DataFrame({"a": [1, 2]}))
        (folder / "extra.bin").write_bytes(b"x")
    assert store.shards("r", "boxes") == ["00001"]
    assert store.read_table("r", "boxes", "00001").a.tolist() == [1, 2]
    manifest = json.loads((store.shard_dir("r", "boxes", "00001") / "publish.json").read_text())
    assert manifest["run_id"] == "0123abcd-run" and manifest["pid"] == os.getpid() and manifest["host"]
    folder = tmp_path / "r" / "boxes"
    assert entries(folder) == [".shards", f".v-00001-{manifest['publish_id']}", "00001"]
    [published] = store.published()
    assert (published.key, published.publish_id) == ("r/boxes/00001", manifest["publish_id"])


def test_an_exception_mid_write_leaves_no_partial_shard_and_keeps_the_old_one(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("r", "boxes", "00001") as folder:
        write_table(folder, pd.DataFrame({"a": [1]}))
    before = entries(tmp_path / "r" / "boxes")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with store.writing("r", "boxes", "00001") as folder:
            write_table(folder, pd.DataFrame({"a": [9, 9, 9]}))
            raise RuntimeError("disk on fire")
    assert store.read_table("r", "boxes", "00001").a.tolist() == [1]  # the old shard, whole
    assert entries(tmp_path / "r" / "boxes") == before  # no leftovers


def test_a_crashed_first_write_publishes_nothing(tmp_path):
    store = ShardStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with store.writing("r", "images", "00000") as folder:
            (folder / "images").mkdir()
            raise KeyboardInterrupt
    assert store.shards("r", "images") == [] and list(store.published()) == []
    assert not store.has_shard("r", "images", "00000")
    assert entries(tmp_path / "r" / "images") == []


def test_a_rerun_replaces_the_shard_whole_and_removes_the_old_version(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("r", "images", "00000") as folder:
        (folder / "old.png").write_bytes(b"old")
        write_table(folder, pd.DataFrame({"a": [1]}))
    with store.writing("r", "images", "00000") as folder:
        write_table(folder, pd.DataFrame({"a": [2]}))
    assert not (store.shard_dir("r", "images", "00000") / "old.png").exists()
    assert store.read_table("r", "images", "00000").a.tolist() == [2]
    assert len([name for name in entries(tmp_path / "r" / "images") if name.startswith(".v-")]) == 1


def test_a_shard_of_the_layout_before_links_is_replaced_by_a_link(tmp_path):
    store = ShardStore(tmp_path)
    legacy = store.shard_dir("r", "boxes", "00000")
    legacy.mkdir(parents=True)
    write_table(legacy, pd.DataFrame({"a": [0]}))
    with store.writing("r", "boxes", "00000") as folder:
        write_table(folder, pd.DataFrame({"a": [1]}))
    assert legacy.is_symlink() and store.read_table("r", "boxes", "00000").a.tolist() == [1]
    assert len([name for name in entries(tmp_path / "r" / "boxes") if name.startswith(".v-")]) == 1


def test_every_publish_changes_the_asset_folders_stamp_after_its_link_swap(tmp_path, monkeypatch):
    """A reader that finds the stamp it saw before listing the folder knows nothing was published since."""
    store = ShardStore(tmp_path)
    assert store.folder_stamp("r", "images") is None  # nothing published in this layout
    stamps = []
    for shard in ("00000", "00001", "00000"):  # a new shard, another, a re-publish
        with store.writing("r", "images", shard) as folder:
            write_table(folder, pd.DataFrame({"a": [1]}))
        stamps.append(store.folder_stamp("r", "images"))
    assert len(set(stamps)) == 3 and (tmp_path / "r" / "images" / ".shards").stat().st_size == 6  # two bytes each
    assert store.folder_stamp("r", "boxes") is None  # per asset folder
    # The stamp moves after the swap: a stamp read while the old link is still in place is stale afterwards.
    seen = {}
    real_replace = os.replace

    def replace(source, target):
        seen["before swap"] = store.folder_stamp("r", "images")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with store.writing("r", "images", "00001") as folder:
        write_table(folder, pd.DataFrame({"a": [2]}))
    assert seen["before swap"] != store.folder_stamp("r", "images")


def test_an_asset_folder_lists_its_links_and_its_plain_folders_of_the_layout_before_links(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("r", "boxes", "00001") as folder:
        write_table(folder, pd.DataFrame({"a": [1]}))
    store.shard_dir("r", "boxes", "00000").mkdir()
    listed = store.asset_folder("r", "boxes")
    assert [s.shard for s in listed.published] == ["00001"] and listed.legacy == ["00000"]
    assert listed.stamp == store.folder_stamp("r", "boxes")


def test_a_crash_in_the_middle_of_a_publish_is_cleaned_by_the_next_write(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("r", "boxes", "00002") as folder:
        write_table(folder, pd.DataFrame({"a": [1]}))
    folder = tmp_path / "r" / "boxes"
    orphan, link = folder / f".v-00002-{'e' * 32}", folder / f".lnk-00002-{'e' * 32}"  # the link never swapped
    orphan.mkdir()
    link.symlink_to(orphan.name)
    assert store.clean() == 0  # young: perhaps a publisher between its two renames
    backdate(orphan, link)
    with store.writing("r", "boxes", "00003") as new:
        write_table(new, pd.DataFrame({"a": [3]}))
    assert store.read_table("r", "boxes", "00002").a.tolist() == [1]
    assert not orphan.exists() and not link.is_symlink()


def backdate(*paths, seconds: float = ORPHAN_AFTER_S + 60) -> None:
    for path in paths:
        os.utime(path, (time.time() - seconds,) * 2, follow_symlinks=False)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staging_folders_are_cleaned_only_when_their_owner_is_gone(tmp_path):
    store = ShardStore(tmp_path, staging_max_age_s=3600)
    with store.writing("r", "boxes", "00000") as folder:  # learns this host's name from the staging folder
        host = folder.name.rsplit("-", 4)[1]
        write_table(folder, pd.DataFrame({"a": [1]}))
    folder = tmp_path / "r" / "boxes"
    dead = folder / f".tmp-00001-{host}-{dead_pid()}-run1-{'a' * 32}"
    live = folder / f".tmp-00001-{host}-{os.getpid()}-run2-{'b' * 32}"
    other_host_recent = folder / f".tmp-00001-elsewhere-1-run3-{'c' * 32}"
    other_host_old = folder / f".tmp-00001-elsewhere-2-run4-{'d' * 32}"
    for staging in (dead, live, other_host_recent, other_host_old):
        (staging / "images").mkdir(parents=True)
    os.utime(other_host_old, (time.time() - 7200, time.time() - 7200))
    assert store.clean() == 2
    assert not dead.exists() and not other_host_old.exists()
    assert live.exists() and other_host_recent.exists()


def _write_as(store: ShardStore, writer: str, barrier) -> None:
    with store.writing("r", "images", "00000", run_id=writer) as folder:
        for index in range(20):
            (folder / f"{writer}-{index}.png").write_bytes(writer.encode())
        write_table(folder, pd.DataFrame({"writer": [writer] * 20}))
        barrier.wait(timeout=30)  # both writers publish at the same moment


def assert_one_whole_shard(store: ShardStore) -> None:
    [writer] = set(store.read_table("r", "images", "00000").writer)
    shard = store.shard_dir("r", "images", "00000")
    assert sorted(p.name for p in shard.glob("*.png")) == sorted(f"{writer}-{i}.png" for i in range(20))
    hidden = [shard.parent / name for name in entries(shard.parent) if name.startswith(".") and name != ".shards"]
    assert all(path.name.startswith(".v-") for path in hidden)  # no staging folder, no link left over
    # Publishes so close that neither saw the other's may leave the loser's version, for a while.
    backdate(*hidden)
    store.clean()
    assert [name for name in entries(shard.parent) if name.startswith(".v-")] == [os.readlink(shard)]


def test_two_threads_writing_one_shard_both_succeed_and_the_last_publish_wins_whole(tmp_path):
    store = ShardStore(tmp_path)
    barrier, errors = threading.Barrier(2), []

    def write(writer):
        try:
            _write_as(store, writer, barrier)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_one_whole_shard(store)


def test_two_processes_writing_one_shard_both_succeed_and_the_last_publish_wins_whole(tmp_path):
    context = multiprocessing.get_context("fork")
    store, barrier = ShardStore(tmp_path), context.Barrier(2)
    processes = [context.Process(target=_write_as, args=(store, name, barrier)) for name in ("first", "second")]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0, 0]
    assert_one_whole_shard(store)


def test_reading_a_missing_shard_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="dagster asset materialize .* --partition 'r\\|00007'"):
        ShardStore(tmp_path).read_table("r", "phrases", "00007")


@pytest.mark.parametrize(("recipe", "asset", "shard"), [
    ("..", "boxes", "00000"), ("../../x", "boxes", "00000"), ("/abs", "boxes", "00000"), ("a/b", "boxes", "00000"),
    ("", "boxes", "00000"), ("r", "..", "00000"), ("r", "boxes", "../00000"), ("r", "boxes", "."),
])
def test_a_name_that_would_leave_the_data_root_or_nest_is_refused(tmp_path, recipe, asset, shard):
    """Issue 19, item 5 (the store's side, e.g. a hand-edited job.json): nothing is written anywhere."""
    store = ShardStore(tmp_path / "data")
    with pytest.raises(UnsafePathError, match="cannot name a file or folder under the data root"):
        with store.writing(recipe, asset, shard) as folder:
            write_table(folder, pd.DataFrame({"a": [1]}))
    assert not any(tmp_path.rglob("table.parquet")) and not (tmp_path.parent / "x").exists()


def test_a_symbolic_link_out_of_the_data_root_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data" / "r").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="outside the data root"):
        ShardStore(tmp_path / "data").shard_dir("r", "boxes", "00000")


def test_published_files_get_the_umask_permissions_whatever_their_writer_chose(tmp_path):
    """Issue 19, item 8: safetensors writes 0600; other users of a shared data root must read it."""
    store = ShardStore(tmp_path)
    old = os.umask(0o022)
    try:
        with store.writing("r", "finetuned_checkpoint", "model") as folder:
            weights = folder / "model.safetensors"
            weights.write_bytes(b"w")
            weights.chmod(0o600)
            (folder / "sub").mkdir(mode=0o700)
            (folder / "sub" / "run.sh").write_text("#!/bin/sh\n")
            (folder / "sub" / "run.sh").chmod(0o700)
    finally:
        os.umask(old)
    published = store.shard_dir("r", "finetuned_checkpoint", "model")
    assert (published / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (published / "sub").stat().st_mode & 0o777 == 0o755
    assert (published / "sub" / "run.sh").stat().st_mode & 0o777 == 0o755


def test_a_corrupt_table_names_the_shard_to_rematerialize(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("shapes", "images", "00003") as folder:
        (folder / "table.parquet").write_bytes(b"not parquet")
    with pytest.raises(CorruptShardError) as error:
        store.read_table("shapes", "images", "00003")
    assert "images shard shapes|00003" in str(error.value)
    assert "--select images --partition 'shapes|00003'" in str(error.value)


@pytest.mark.parametrize("name", ["../../escape.parquet", "../x", "..", ".", "a/b.parquet", "/abs.parquet", ""])
def test_a_table_name_that_would_leave_its_shard_is_refused(tmp_path, name):
    """Issue 30, item 5: a table name is a path component of the store too (a hand-edited job.json's
    `tables` wrote `../` names outside the data root)."""
    store = ShardStore(tmp_path / "data")
    with pytest.raises(UnsafePathError, match=f"table name {re.escape(repr(name))} cannot name a file or folder"):
        with store.writing("r", "boxes", "00000") as folder:
            write_table(folder, pd.DataFrame({"a": [1]}), name)
    with pytest.raises(UnsafePathError, match="table name"):
        store.read_table("r", "boxes", "00000", name)
    assert not list(tmp_path.rglob("*.parquet"))


def test_a_pinned_version_keeps_reading_the_same_table_until_a_publish_deletes_it(tmp_path):
    store = ShardStore(tmp_path)
    with store.writing("r", "boxes", "00001") as folder:
        write_table(folder, pd.DataFrame({"a": [1]}))
    pinned = store.pin("r", "boxes", "00001")
    manifest = json.loads((store.shard_dir("r", "boxes", "00001") / "publish.json").read_text())
    assert (pinned.publish_id, pinned.version) == (manifest["publish_id"], f".v-00001-{manifest['publish_id']}")
    assert store.read_version(pinned).a.tolist() == [1]
    with store.writing("r", "boxes", "00001") as folder:
        write_table(folder, pd.DataFrame({"a": [2]}))
    assert store.pin("r", "boxes", "00001").publish_id != pinned.publish_id
    with pytest.raises(FileNotFoundError, match=r"boxes shard r\|00001 is not materialized"):
        store.read_version(pinned)  # the republish deleted the pinned version: an error, never the new table


def test_pinning_an_unpublished_shard_names_what_to_materialize(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"materialize it first.*--select boxes --partition 'r\|00002'"):
        ShardStore(tmp_path).pin("r", "boxes", "00002")


def test_a_shard_of_the_layout_before_links_pins_to_its_own_folder(tmp_path):
    folder = tmp_path / "r" / "boxes" / "00003"
    folder.mkdir(parents=True)
    write_table(folder, pd.DataFrame({"a": [3]}))
    (folder / "publish.json").write_text(json.dumps({"publish_id": "ab" * 16}))
    pinned = ShardStore(tmp_path).pin("r", "boxes", "00003")
    assert (pinned.publish_id, pinned.folder) == ("ab" * 16, folder)
    assert ShardStore.read_version(pinned).a.tolist() == [3]
