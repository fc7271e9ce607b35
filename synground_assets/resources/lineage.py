"""Lineage: every box -> phrase -> image -> description -> concept set, queryable with one DuckDB query.

Written as files, indexed into DuckDB. Each generation shard carries its own lineage rows as
Parquet files, `<shard>/lineage/<table>.parquet` (who made each row: adapter, model id, revision,
settings; where: recipe, shard, Dagster partition key and run id; with which code: code version),
published by the same rename as the shard: shard and lineage appear together or not at all, and no
generation step takes a lock or opens the database.

The DuckDB file is an index of those files, built by `Lineage.refresh(data_root)`: one builder at
a time (a lock file next to the database), incrementally (new shards added, replaced shards
re-indexed, vanished shards dropped, by publish id), one transaction per batch of shards. Queries
run on the index. Two tables are not made by shards: `benchmark_scores` and `checkpoint_shards`,
one row set per learning-asset run, written straight into the index under the same lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from synground_assets.config import settings
from synground_assets.resources.dedup_tables import rebuild_lookup_tables
from synground_assets.resources.lineage_index import refresh_index
from synground_assets.resources.lineage_schema import DIRECT_TABLES, LINEAGE_FOLDER, ensure_schema
from synground_assets.resources.store import ShardStore, default_data_root


class _Busy(Exception):
    """DuckDB refused the file because another process holds it."""


def default_lineage_path() -> Path:
    return Path(settings.lineage_path() or default_data_root() / "lineage.duckdb")


def refreshed_lineage() -> "Lineage":
    """The default lineage index, first brought up to date with the default data root: what a
    reader of the shards' lineage calls before it queries."""
    lineage = Lineage(default_lineage_path())
    lineage.refresh(default_data_root())
    return lineage


def write_shard_lineage(folder: Path, tables: dict[str, pd.DataFrame], common: dict | None = None) -> None:
    """A shard's lineage rows as `<folder>/lineage/<table>.parquet` (empty tables are left out),
    each with the `common` columns (who made the shard, where: the same value on every row) added
    after its own, or in place of a column of that name, as `DataFrame.assign` would. The columns
    are added by Arrow, not pandas: the same file at a third of the cost, a shard's stages write
    some 17 of these per shard."""
    target = folder / LINEAGE_FOLDER
    target.mkdir(exist_ok=True)
    constants = pa.Table.from_pandas(pd.DataFrame([common]), preserve_index=False) if common else None
    for table, rows in tables.items():
        if not len(rows):
            continue
        frame = pa.Table.from_pandas(rows, preserve_index=False)
        for name in constants.column_names if constants is not None else []:
            column = pa.repeat(constants[name][0], len(rows))
            position = frame.schema.get_field_index(name)
            frame = (frame.set_column(position, name, column) if position >= 0
                     else frame.append_column(name, column))
        pq.write_table(frame, target / f"{table}.parquet")


class Lineage:
    """The lineage index: `refresh` brings it up to date with the data root, `query` reads it."""

    def __init__(self, path: str | os.PathLike, busy_timeout_s: float = 600.0, config: dict | None = None,
                 on_wait: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.config = config or {}  # DuckDB settings, e.g. {"memory_limit": "4GB", "threads": 2} on a shared host
        self.on_wait = on_wait  # told once, with what it waits for, when the index is busy (the CLI prints it)

    def refresh(self, data_root: str | os.PathLike, band_distances: set[int] | None = None) -> dict:
        """Index the shards published under `data_root` since the last refresh (new and replaced
        ones), drop those that disappeared. Returns counts of shards (indexed, replaced, removed,
        unchanged, changed_while_indexing, failed, with the failures' errors) and the seconds it took.
        `band_distances`: the image dedup distances to precompute hash bands for (default: the
        recipe book's, `dedup_tables.dedup_distances`)."""
        start = time.monotonic()
        if not Path(data_root).is_dir():  # else every indexed shard would count as vanished
            raise FileNotFoundError(f"no data root at {data_root}: point SYNGROUND_DATA (or the store's root) at "
                                    f"the folder the shards are published in")
        with self._writer() as connection:
            counts = refresh_index(connection, ShardStore(data_root), band_distances)
        return {**counts, "seconds": round(time.monotonic() - start, 3)}

    def replace(self, table: str, rows: pd.DataFrame, where: dict) -> None:
        """For the learning assets' own tables: delete the rows matching `where` (column -> value)
        and insert `rows`, in one transaction."""
        if table not in DIRECT_TABLES:
            raise ValueError(f"{table!r} is not written directly; expected one of {', '.join(DIRECT_TABLES)} "
                             f"(shard lineage goes into the shard's {LINEAGE_FOLDER}/ folder)")
        with self._writer() as connection:
            connection.execute("BEGIN TRANSACTION")
            clause = " AND ".join(f"{column} = ?" for column in where)
            connection.execute(f"DELETE FROM {table} WHERE {clause}", list(where.values()))
            if len(rows):
                connection.register("incoming_rows", rows)
                connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                connection.unregister("incoming_rows")
            connection.execute("COMMIT")

    def query(self, sql: str, parameters: list | None = None) -> pd.DataFrame:
        """Run a read-only query on the index as it is (refresh first to see the latest shards)."""
        with self.reading() as connection:
            return connection.execute(sql, parameters or []).df()

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the index as it is, for a reader with several queries."""
        if not self.path.exists():
            raise FileNotFoundError(f"no lineage index at {self.path}: build it with "
                                    f"`python -m synground_assets.ops.cli index` (or Lineage.refresh)")
        connection = self._connect(read_only=True)
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The one writer of the index: an exclusive lock file first (another builder waits), then
        the database, whose schema is brought up to date."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            self._wait_while_busy(lambda: fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB), BlockingIOError,
                                  f"another builder holds {lock.name}")
            connection = self._connect(read_only=False)
            try:
                if ensure_schema(connection, self.path):
                    rebuild_lookup_tables(connection)  # derived from the shard tables, which older code left alone
                yield connection
            finally:
                connection.close()  # an uncommitted transaction is rolled back

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting while another process (a reader's shell, a builder) holds it."""
        def connect() -> duckdb.DuckDBPyConnection:
            try:
                return duckdb.connect(str(self.path), read_only=read_only, config=self.config)
            except duckdb.IOException as exc:
                raise (_Busy(exc) if "lock" in str(exc).lower() else exc) from exc

        return self._wait_while_busy(connect, _Busy, f"another process has {self.path} open (a duckdb shell?)")

    def _wait_while_busy(self, attempt: Callable, busy: type[BaseException], why: str):
        """`attempt()` until it does not raise `busy`, for up to `busy_timeout_s`; `on_wait` hears once why."""
        deadline = time.monotonic() + self.busy_timeout_s
        told = False
        while True:
            try:
                return attempt()
            except busy as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"lineage index {self.path}: still busy after {self.busy_timeout_s:.0f} s: "
                                       f"{why}") from exc
                if self.on_wait and not told:
                    self.on_wait(f"lineage index {self.path} is busy ({why}); waiting up to "
                                 f"{self.busy_timeout_s:.0f} s")
                    told = True
                time.sleep(0.2)
