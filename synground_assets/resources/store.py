"""The shard store: where every asset's output lives, and the only code that knows paths.

Layout: `<root>/<recipe>/<asset>/<shard>` is a symbolic link to an immutable version folder
`.v-<shard>-<publish id>` next to it, holding `table.parquet` (one row per item, phrase or box), any
files (images), `lineage/<table>.parquet` (the shard's lineage rows) and `publish.json` (who
published it, when). Readers go through the link and never see the version names.

Writing a shard, by any number of writers on any number of hosts sharing one POSIX file system:
1. the writer fills a staging folder it owns, `.tmp-<shard>-<host>-<pid>-<run8>-<uuid>`;
2. under the asset folder's publish lock (held for a few renames), the staging folder is renamed to
   its version folder and the link is replaced by a new one with `os.replace`, one atomic rename:
   a reader sees the whole old shard or the whole new one, never a half or none;
3. the version it replaced is removed.
Two writers of one shard both succeed and the last publish wins whole. A crashed write leaves its
staging folder, which any later write in that asset folder removes once its owner is gone (same
host, pid no longer alive) or it is older than `staging_max_age_s`; a crash in the middle of a
publish leaves at worst a version folder no link names, removed the same way.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd

TABLE = "table.parquet"
MANIFEST = "publish.json"
PUBLISH_LOCK = ".publish.lock"
STAGING, VERSION, LINK, DOOMED = ".tmp-", ".v-", ".lnk-", ".del-"
# A staging folder from another host (whose pid cannot be checked) counts as abandoned after this
# long: it must exceed the longest shard write. `SYNGROUND_STAGING_MAX_AGE_S` overrides it.
DEFAULT_STAGING_MAX_AGE_S = 24 * 3600.0
_VERSION_NAME = re.compile(r"^\.v-(?P<shard>.+)-(?P<publish_id>[0-9a-f]{32})$")
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())
_IN_PROCESS = threading.Lock()  # file locks are per process: threads of one process queue here first


def project_home() -> Path:
    """The folder that holds the project's local state: `$SYNGROUND_HOME`, else the working directory."""
    return Path(os.environ.get("SYNGROUND_HOME") or os.getcwd()).resolve()


def default_data_root() -> Path:
    return Path(os.environ.get("SYNGROUND_DATA") or project_home() / "data").resolve()


def default_staging_max_age_s() -> float:
    return float(os.environ.get("SYNGROUND_STAGING_MAX_AGE_S") or DEFAULT_STAGING_MAX_AGE_S)


@dataclass(frozen=True)
class PublishedShard:
    """One published shard as the index sees it: `folder` is its immutable version folder."""

    recipe: str
    asset: str
    shard: str
    publish_id: str
    folder: Path

    @property
    def key(self) -> str:
        return f"{self.recipe}/{self.asset}/{self.shard}"


class ShardStore:
    def __init__(self, root: str | os.PathLike, staging_max_age_s: float | None = None):
        self.root = Path(root)
        self.staging_max_age_s = default_staging_max_age_s() if staging_max_age_s is None else staging_max_age_s

    def shard_dir(self, recipe: str, asset: str, shard: str) -> Path:
        return self.root / recipe / asset / shard

    def has_shard(self, recipe: str, asset: str, shard: str) -> bool:
        return (self.shard_dir(recipe, asset, shard) / TABLE).is_file()

    def shards(self, recipe: str, asset: str) -> list[str]:
        """Published shards of one recipe's asset, in key order."""
        folder = self.root / recipe / asset
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / TABLE).is_file())

    def read_table(self, recipe: str, asset: str, shard: str, name: str = TABLE) -> pd.DataFrame:
        path = self.shard_dir(recipe, asset, shard) / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{asset} shard {recipe}|{shard} is not materialized ({path} is missing); "
                f"materialize it first, e.g. dagster asset materialize -m synground_assets "
                f"--select {asset} --partition '{recipe}|{shard}'"
            )
        return pd.read_parquet(path)

    @contextmanager
    def writing(self, recipe: str, asset: str, shard: str, run_id: str = "") -> Iterator[Path]:
        """Yield an empty folder this writer owns; publish it whole when the block succeeds."""
        final = self.shard_dir(recipe, asset, shard)
        final.parent.mkdir(parents=True, exist_ok=True)
        self.clean_folder(final.parent)
        publish_id = uuid.uuid4().hex
        run8 = re.sub(r"[^A-Za-z0-9]", "", run_id)[:8] or "norun"
        staging = final.parent / f"{STAGING}{shard}-{_HOST}-{os.getpid()}-{run8}-{publish_id}"
        staging.mkdir()
        try:
            yield staging
            (staging / MANIFEST).write_text(json.dumps({
                "publish_id": publish_id, "recipe": recipe, "asset": asset, "shard": shard, "run_id": run_id,
                "host": socket.gethostname(), "pid": os.getpid(),
                "published_at": datetime.now(timezone.utc).isoformat()}, indent=2))
            _publish(staging, final, publish_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # still there only when the write failed

    def remove_shard(self, recipe: str, asset: str, shard: str) -> None:
        """Unpublish a shard: its link goes in one step, then its version folder."""
        final = self.shard_dir(recipe, asset, shard)
        with _publish_lock(final.parent):
            doomed = _retire(final)
        _delete([doomed])

    def published(self) -> Iterator[PublishedShard]:
        """Every shard published in this layout, under every recipe and asset (one readlink each)."""
        for asset_dir in self.root.glob(f"*/*/{PUBLISH_LOCK}"):
            asset_dir = asset_dir.parent
            with os.scandir(asset_dir) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.is_symlink():
                        continue
                    try:
                        match = _VERSION_NAME.match(os.readlink(entry.path))
                    except FileNotFoundError:  # unpublished meanwhile
                        continue
                    if match and match["shard"] == entry.name:
                        yield PublishedShard(asset_dir.parent.name, asset_dir.name, entry.name, match["publish_id"],
                                             asset_dir / match.group(0))

    def clean(self) -> int:
        """`clean_folder` over every asset folder of the root; returns how many leftovers went."""
        return sum(self.clean_folder(lock.parent) for lock in self.root.glob(f"*/*/{PUBLISH_LOCK}"))

    def clean_folder(self, asset_dir: Path) -> int:
        """Remove the leftovers of crashed writes in one asset folder: staging folders whose owner is
        gone, and version folders or links no shard link names (checked under the publish lock)."""
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
        if suspects:
            with _publish_lock(asset_dir):
                stale += [_doom(asset_dir / name) for name in suspects if _unreferenced(asset_dir, name)]
        _delete(stale)
        return len([path for path in stale if path])

    def _abandoned(self, entry: os.DirEntry, now: float) -> bool:
        parts = entry.name.rsplit("-", 4)  # .tmp-<shard>, host, pid, run8, uuid
        if len(parts) == 5 and parts[1] == _HOST and parts[2].isdigit() and not _alive(int(parts[2])):
            return True
        try:
            return now - entry.stat(follow_symlinks=False).st_mtime > self.staging_max_age_s
        except FileNotFoundError:  # its writer published or removed it meanwhile
            return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextmanager
def _publish_lock(asset_dir: Path) -> Iterator[None]:
    """One publisher per asset folder at a time, across threads, processes and (through the file
    system's POSIX locks, NFS included) hosts. Held only for a few renames."""
    with _IN_PROCESS, open(asset_dir / PUBLISH_LOCK, "a") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN)


def _publish(staging: Path, final: Path, publish_id: str) -> None:
    version = final.parent / f"{VERSION}{final.name}-{publish_id}"
    link = final.parent / f"{LINK}{final.name}-{publish_id}"
    with _publish_lock(final.parent):
        os.rename(staging, version)
        old = _retire_legacy(final) or _link_target(final)
        os.symlink(version.name, link)
        os.replace(link, final)  # the publish: one atomic rename of the link
        doomed = _doom(old) if old else None
    _delete([doomed])


def _link_target(final: Path) -> Path | None:
    return final.parent / os.readlink(final) if final.is_symlink() else None


def _retire_legacy(final: Path) -> Path | None:
    """A shard of the layout before links (a plain folder) is moved aside so a link can take its name."""
    if final.is_dir() and not final.is_symlink():
        aside = final.parent / f"{VERSION}{final.name}-{uuid.uuid4().hex}"
        os.rename(final, aside)
        return aside
    return None


def _retire(final: Path) -> Path | None:
    """Take a shard's name away (link or legacy folder); returns what to delete. Caller holds the lock."""
    old = _retire_legacy(final) or _link_target(final)
    if final.is_symlink():
        final.unlink()
    return _doom(old) if old else None


def _unreferenced(asset_dir: Path, name: str) -> bool:
    """A version folder no link names, or a link that was never swapped in (caller holds the lock)."""
    if name.startswith(LINK):
        return True
    match = _VERSION_NAME.match(name)
    if not match:
        return False
    final = asset_dir / match["shard"]
    return not (final.is_symlink() and os.readlink(final) == name)


def _doom(path: Path) -> Path | None:
    """Rename to a `.del-` name (atomic, under the lock) so the slow delete can run unlocked."""
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


def write_table(folder: Path, frame: pd.DataFrame, name: str = TABLE) -> Path:
    """Parquet without a pandas index, so identical frames give identical bytes."""
    path = folder / name
    frame.to_parquet(path, index=False)
    return path
