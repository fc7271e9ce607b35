"""The shard store: where every asset's output lives, and the only code that knows paths.

Layout: `<root>/<recipe>/<asset>/<shard>/` holding `table.parquet` (one row per item, phrase or box)
and any files (images). A shard is written into a hidden temporary folder next to its final place
and published by renaming it there, so a reader sees either the whole old shard, the whole new one,
or (for an instant, when replacing) none: never a half-written one. A crashed write leaves only a
hidden `.tmp-*` folder, which the next write of that shard removes.

Everything goes through `ShardStore`, so a deployment over many machines can point `root` at shared
storage (a network file system) without touching the assets.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd

TABLE = "table.parquet"


def project_home() -> Path:
    """The folder that holds the project's local state: `$SYNGROUND_HOME`, else the working directory."""
    return Path(os.environ.get("SYNGROUND_HOME") or os.getcwd()).resolve()


def default_data_root() -> Path:
    return Path(os.environ.get("SYNGROUND_DATA") or project_home() / "data").resolve()


class ShardStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

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
                f"materialize it first, e.g. dagster asset materialize -m synground_assets.definitions "
                f"--select {asset} --partition '{recipe}|{shard}'"
            )
        return pd.read_parquet(path)

    @contextmanager
    def writing(self, recipe: str, asset: str, shard: str) -> Iterator[Path]:
        """Yield an empty folder to write a shard into; publish it whole when the block succeeds."""
        final = self.shard_dir(recipe, asset, shard)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale(final)
        staging = final.parent / f".tmp-{shard}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            yield staging
            self._publish(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _publish(staging: Path, final: Path) -> None:
        retired = final.parent / f".old-{final.name}-{uuid.uuid4().hex}"
        if final.exists():
            os.rename(final, retired)
        os.rename(staging, final)
        shutil.rmtree(retired, ignore_errors=True)

    @staticmethod
    def _remove_stale(final: Path) -> None:
        """Leftovers of writes of this shard that crashed (no other writer runs for the same shard)."""
        for stale in final.parent.glob(f".tmp-{final.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for retired in final.parent.glob(f".old-{final.name}-*"):
            if final.exists():
                shutil.rmtree(retired, ignore_errors=True)
            else:  # crashed between the two renames of a publish: the retired shard is still whole
                os.rename(retired, final)


def write_table(folder: Path, frame: pd.DataFrame, name: str = TABLE) -> Path:
    """Parquet without a pandas index, so identical frames give identical bytes."""
    path = folder / name
    frame.to_parquet(path, index=False)
    return path
