"""The shard store: where every asset's output lives, and the only code that knows paths.

Layout: `<root>/<recipe>/<asset>/<shard>` is a symbolic link to an immutable version folder
`.v-<shard>-<publish id>` next to it, holding `table.parquet` (one row per item, phrase or box), any
files (images), `lineage/<table>.parquet` (the shard's lineage rows) and `publish.json` (who
published it, when). Readers go through the link and never see the version names.

Writing a shard, by any number of writers on any number of hosts sharing one POSIX file system,
without any lock:
1. the writer fills a staging folder it owns, `.tmp-<shard>-<host>-<pid>-<run8>-<uuid>`;
2. it renames the staging folder to its version folder and replaces the link by a new one with
   `os.replace`, one atomic rename: a reader sees the whole old shard or the whole new one, never
   a half or none;
3. it removes the version it replaced, or its own if another writer's publish came after it.
Around step 2 it appends a byte to the asset folder's `.shards` marker (before and after the swap),
so the marker's size and mtime stamp the folder: unchanged stamp, no publish since (`folder_stamp`).
Two writers of one shard both succeed and the last publish wins whole. A crashed write leaves its
staging folder, which any later write in that asset folder removes once its owner is gone (same
host, pid no longer alive) or it is older than `staging_max_age_s`. A version folder no link names
(a crash between the two renames, or two publishes so close that neither saw the other's) is
removed the same way once it is `ORPHAN_AFTER_S` old: a version never becomes current again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from synground_assets.config import settings
from synground_assets.ops.permissions import apply_umask
from synground_assets.ops.processes import process_alive

TABLE = "table.parquet"
MANIFEST = "publish.json"
# In every asset folder holding published shards: what the index scans. Every publish appends a
# byte before its link swap and one after, so the marker's (size, mtime) is the folder's stamp: a
# reader that finds the stamp the index recorded (read before the index listed the folder) knows the
# folder has not been published into since, without listing it.
SHARDS_MARKER = ".shards"
STAGING, VERSION, LINK, DOOMED = ".tmp-", ".v-", ".lnk-", ".del-"
# A staging folder from another host (whose pid cannot be checked) counts as abandoned after this
# long: it must exceed the longest shard write. `SYNGROUND_STAGING_MAX_AGE_S` overrides it.
DEFAULT_STAGING_MAX_AGE_S = 24 * 3600.0
# A version folder lives unnamed by its link only between a publisher's two renames (microseconds),
# so one this old that no link names is an orphan.
ORPHAN_AFTER_S = 600.0
# One path component of a shard's place (recipe, asset, shard): no separator, not "." or "..".
_COMPONENT = re.compile(r"^[A-Za-z0-9._+-]+$")
_VERSION_NAME = re.compile(r"^\.v-(?P<shard>.+)-(?P<publish_id>[0-9a-f]{32})$")
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())


def project_home() -> Path:
    """The folder that holds the project's local state: `$SYNGROUND_HOME`, else the working directory."""
    return Path(settings.home() or os.getcwd()).resolve()


def default_data_root() -> Path:
    return Path(settings.data_root() or project_home() / "data").resolve()


def default_staging_max_age_s() -> float:
    return float(settings.staging_max_age_s() or DEFAULT_STAGING_MAX_AGE_S)


@dataclass(frozen=True)
class PublishedShard:
    """One published shard as the index sees it: `folder` is its immutable version folder."""

    recipe: str
    asset: str
    shard: str
    publish_id: str
    asset_dir: Path
    version: str  # the version folder's name
    present: bool = True  # False: the link names a version folder that is gone (deleted by hand)

    @property
    def key(self) -> str:
        return f"{self.recipe}/{self.asset}/{self.shard}"

    @property
    def folder(self) -> Path:
        return self.asset_dir / self.version


@dataclass(frozen=True)
class AssetFolder:
    """One asset folder as listed: its stamp (read before the listing), its published shards and the
    shards of the layout before links (plain folders)."""

    recipe: str
    asset: str
    stamp: str | None
    published: list[PublishedShard]
    legacy: list[str]


class UnsafePathError(ValueError):
    """A recipe, asset, shard or table name that would place a file outside the data root."""


def check_component(kind: str, name: object, where: str | os.PathLike) -> str:
    """`name` if it is one plain path component (no separator, not "." or ".."), else a clear error."""
    if not isinstance(name, str) or not _COMPONENT.match(name) or name in (".", ".."):
        raise UnsafePathError(f"{kind} name {name!r} cannot name a file or folder under {where}: "
                              "expected letters, digits, '.', '_', '+' or '-', not '.' or '..'")
    return name


def table_path(folder: Path, name: str) -> Path:
    """`folder/name` for a table or file of a shard, refused unless `name` is one plain path component
    (a hand-edited job.json with `../` in a table name wrote outside the data root)."""
    return folder / check_component("table", name, folder)


class CorruptShardError(RuntimeError):
    """A published table that cannot be read; the message names the shard to rematerialize."""


class ShardStore:
    def __init__(self, root: str | os.PathLike, staging_max_age_s: float | None = None):
        self.root = Path(root)
        self.staging_max_age_s = default_staging_max_age_s() if staging_max_age_s is None else staging_max_age_s

    def shard_dir(self, recipe: str, asset: str, shard: str) -> Path:
        """`<root>/<recipe>/<asset>/<shard>`, refused unless each name is one plain path component and the
        folder that holds the shard, symbolic links resolved, stays under the root."""
        for kind, name in (("recipe", recipe), ("asset", asset), ("shard", shard)):
            check_component(kind, name, f"the data root {self.root}")
        path = self.root / recipe / asset / shard
        root = os.path.realpath(self.root)
        if os.path.commonpath([root, os.path.realpath(path.parent)]) != root:
            raise UnsafePathError(f"{path.parent} resolves to {os.path.realpath(path.parent)}, outside the data root "
                                  f"{root}: a symbolic link under the root points out of it")
        return path

    def has_shard(self, recipe: str, asset: str, shard: str) -> bool:
        return (self.shard_dir(recipe, asset, shard) / TABLE).is_file()

    def shards(self, recipe: str, asset: str) -> list[str]:
        """Published shards of one recipe's asset, in key order."""
        folder = self.root / recipe / asset
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / TABLE).is_file())

    def read_table(self, recipe: str, asset: str, shard: str, name: str = TABLE) -> pd.DataFrame:
        return _read_parquet(table_path(self.shard_dir(recipe, asset, shard), name), recipe, asset, shard)

    def pin(self, recipe: str, asset: str, shard: str) -> PublishedShard:
        """The version a shard's link names now: reading through `folder` keeps reading that version
        whatever is published after, until a later publish deletes it (then reads fail, never mix).
        A shard of the layout before links is its own folder, with the publish id of its publish.json."""
        final = self.shard_dir(recipe, asset, shard)
        asset_dir = final.parent
        if final.is_symlink():
            version = os.readlink(final)
            match = _VERSION_NAME.match(version)
            if match and (asset_dir / version / TABLE).is_file():
                return PublishedShard(recipe, asset, shard, match["publish_id"], asset_dir, version)
        elif (final / TABLE).is_file():
            publish_id = ""
            if (final / MANIFEST).is_file():
                publish_id = json.loads((final / MANIFEST).read_text()).get("publish_id", "")
            return PublishedShard(recipe, asset, shard, publish_id, asset_dir, shard)
        raise FileNotFoundError(_not_materialized(final / TABLE, recipe, asset, shard))

    @staticmethod
    def read_version(shard: PublishedShard, name: str = TABLE) -> pd.DataFrame:
        """A table of one pinned version (`pin`)."""
        return _read_parquet(table_path(shard.folder, name), shard.recipe, shard.asset, shard.shard)

    @contextmanager
    def writing(self, recipe: str, asset: str, shard: str, run_id: str = "",
                before_publish: Callable[[], None] | None = None) -> Iterator[Path]:
        """Yield an empty folder this writer owns; publish it whole when the block succeeds, unless
        `before_publish` (called last, e.g. "is my run still started?") raises."""
        final = self.shard_dir(recipe, asset, shard)
        final.parent.mkdir(parents=True, exist_ok=True)
        self.clean_folder(final.parent)
        publish_id = uuid.uuid4().hex
        run8 = re.sub(r"[^A-Za-z0-9]", "", run_id)[:8] or "norun"
        staging = final.parent / f"{STAGING}{shard}-{_HOST}-{os.getpid()}-{run8}-{publish_id}"
        staging.mkdir()
        try:
            yield staging
            apply_umask(staging)
            if before_publish is not None:
                before_publish()
            (staging / MANIFEST).write_text(json.dumps({
                "publish_id": publish_id, "recipe": recipe, "asset": asset, "shard": shard, "run_id": run_id,
                "host": socket.gethostname(), "pid": os.getpid(),
                "published_at": datetime.now(timezone.utc).isoformat()}, indent=2))
            _publish(staging, final, publish_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # still there only when the write failed

    def published(self) -> Iterator[PublishedShard]:
        """Every shard published in this layout, under every recipe and asset (one readlink and one stat
        each); a link whose version folder was deleted comes with `present=False`."""
        for folder in self.asset_folders():
            yield from folder.published

    def asset_folders(self) -> Iterator[AssetFolder]:
        """Every asset folder holding published shards, each listed after its stamp was read."""
        for marker in self.root.glob(f"*/*/{SHARDS_MARKER}"):
            yield self.asset_folder(marker.parent.parent.name, marker.parent.name)

    def asset_folder(self, recipe: str, asset: str, check_present: bool = True) -> AssetFolder:
        """One asset folder: its stamp, read first, then its published shards and legacy folders. A
        publish after the listing changes the stamp, so a stamp equal to this one later means this
        listing is still the folder's. `check_present=False` spares the stat of each version folder
        (every shard then comes with `present=True`)."""
        stamp = self.folder_stamp(recipe, asset)
        published, legacy = [], []
        asset_dir = self.root / recipe / asset
        if asset_dir.is_dir():
            with os.scandir(asset_dir) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if not entry.is_symlink():
                        if entry.is_dir():
                            legacy.append(entry.name)
                    elif shard := self._published_entry(recipe, asset, asset_dir, entry, check_present):
                        published.append(shard)
        return AssetFolder(recipe, asset, stamp, published, sorted(legacy))

    def published_in(self, recipe: str, asset: str) -> Iterator[PublishedShard]:
        """The shards of one recipe's asset published in this layout (one readlink and one stat each); a
        link whose version folder was deleted comes with `present=False`."""
        yield from self.asset_folder(recipe, asset).published

    def folder_stamp(self, recipe: str, asset: str) -> str | None:
        """The asset folder's stamp: its `.shards` marker's size and mtime (ns), which every publish
        changes; None without a marker (nothing published in this layout)."""
        try:
            stat = os.stat(self.root / recipe / asset / SHARDS_MARKER)
        except FileNotFoundError:
            return None
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    @staticmethod
    def _published_entry(recipe: str, asset: str, asset_dir: Path, entry: os.DirEntry,
                         check_present: bool = True) -> PublishedShard | None:
        try:
            version = os.readlink(entry.path)
        except FileNotFoundError:  # unpublished meanwhile
            return None
        match = _VERSION_NAME.match(version)
        if not match or match["shard"] != entry.name:
            return None
        return PublishedShard(recipe, asset, entry.name, match["publish_id"], asset_dir, version,
                              present=not check_present or os.path.isdir(os.path.join(asset_dir, version)))

    def clean(self) -> int:
        """`clean_folder` over every asset folder of the root; returns how many leftovers went."""
        return sum(self.clean_folder(marker.parent) for marker in self.root.glob(f"*/*/{SHARDS_MARKER}"))

    def clean_folder(self, asset_dir: Path) -> int:
        """Remove the leftovers of crashed writes in one asset folder: staging folders whose owner is
        gone, version folders no link names and links never swapped in, once `ORPHAN_AFTER_S` old."""
        now, stale, versions, links, shards = time.time(), [], {}, [], set()
        with os.scandir(asset_dir) as entries:
            for entry in entries:
                if entry.name.startswith(STAGING) and self._abandoned(entry, now):
                    stale.append(Path(entry.path))
                elif entry.name.startswith(DOOMED):
                    stale.append(Path(entry.path))  # a remover crashed before it finished
                elif entry.name.startswith(LINK):
                    links.append(entry.name)
                elif match := _VERSION_NAME.match(entry.name):
                    versions.setdefault(match["shard"], []).append(entry.name)
                elif not entry.name.startswith("."):
                    shards.add(entry.name)
        # Names alone say where an orphan may be: a shard with several versions, or with no link.
        suspects = links + [name for shard, names in versions.items() if len(names) > 1 or shard not in shards
                            for name in names]
        stale += [_doom(asset_dir / name) for name in suspects if _orphaned(asset_dir / name, now)]
        _delete(stale)
        return len([path for path in stale if path])

    def _abandoned(self, entry: os.DirEntry, now: float) -> bool:
        parts = entry.name.rsplit("-", 4)  # .tmp-<shard>, host, pid, run8, uuid
        if len(parts) == 5 and parts[1] == _HOST and parts[2].isdigit() and not process_alive(int(parts[2])):
            return True
        try:
            return now - entry.stat(follow_symlinks=False).st_mtime > self.staging_max_age_s
        except FileNotFoundError:  # its writer published or removed it meanwhile
            return False


def _publish(staging: Path, final: Path, publish_id: str) -> None:
    version = final.parent / f"{VERSION}{final.name}-{publish_id}"
    link = final.parent / f"{LINK}{final.name}-{publish_id}"
    _bump_stamp(final.parent)  # also creates the marker, so the index finds this folder
    os.rename(staging, version)
    old = _retire_legacy(final) or _link_target(final)
    os.symlink(version.name, link)
    os.replace(link, final)  # the publish: one atomic rename of the link
    # After the swap: an index that read the stamp before this line may have listed the old link, and
    # its stamp no longer matches. (The bump before the swap narrows a crash between the two to a
    # refresh that read the stamp in between.)
    _bump_stamp(final.parent)
    # A version never becomes current again once replaced, so either one can go now: the version
    # this publish replaced, or this publish's own if another writer's came after it.
    superseded = _link_target(final) != version
    _delete([_doom(version) if superseded else None, _doom(old) if old and old != version else None])


def _bump_stamp(asset_dir: Path) -> None:
    """Append one byte to the asset folder's marker: its size grows and its mtime moves (both kept in
    the stamp, so two appends racing on a file system without atomic appends still change it)."""
    with open(asset_dir / SHARDS_MARKER, "ab") as marker:
        marker.write(b".")


def _link_target(final: Path) -> Path | None:
    return final.parent / os.readlink(final) if final.is_symlink() else None


def _retire_legacy(final: Path) -> Path | None:
    """A shard of the layout before links (a plain folder) is moved aside so a link can take its name."""
    if final.is_dir() and not final.is_symlink():
        aside = final.parent / f"{VERSION}{final.name}-{uuid.uuid4().hex}"
        try:
            os.rename(final, aside)
        except FileNotFoundError:  # another writer moved it first
            return None
        return aside
    return None


def _orphaned(path: Path, now: float) -> bool:
    """A link never swapped in, or a version folder no link names, older than `ORPHAN_AFTER_S`."""
    try:
        if now - path.lstat().st_mtime < ORPHAN_AFTER_S:
            return False  # possibly a publisher between its two renames
    except FileNotFoundError:
        return False
    match = _VERSION_NAME.match(path.name)
    if not match:
        return path.name.startswith(LINK)
    final = path.parent / match["shard"]
    return _link_target(final) != path


def _doom(path: Path) -> Path | None:
    """Claim a folder for deletion with one atomic rename to a `.del-` name: of several removers one
    wins, and a half-deleted folder never looks like a shard or a version."""
    doomed = path.parent / f"{DOOMED}{uuid.uuid4().hex}"
    try:
        os.rename(path, doomed)
    except FileNotFoundError:  # already gone
        return None
    return doomed


def _delete(paths: list[Path | None]) -> None:
    for path in filter(None, paths):
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _not_materialized(path: Path, recipe: str, asset: str, shard: str) -> str:
    return (f"{asset} shard {recipe}|{shard} is not materialized ({path} is missing); "
            f"materialize it first, e.g. dagster asset materialize -m synground_assets.definitions "
            f"--select {asset} --partition '{recipe}|{shard}'")


def _read_parquet(path: Path, recipe: str, asset: str, shard: str) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(_not_materialized(path, recipe, asset, shard))
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise CorruptShardError(
            f"{asset} shard {recipe}|{shard}: {path} cannot be read ({type(exc).__name__}: {exc}); rematerialize "
            f"it: dagster asset materialize -m synground_assets.definitions --select {asset} "
            f"--partition '{recipe}|{shard}'") from exc


def write_table(folder: Path, frame: pd.DataFrame, name: str = TABLE) -> Path:
    """Parquet without a pandas index, so identical frames give identical bytes."""
    path = table_path(folder, name)
    frame.to_parquet(path, index=False)
    return path
