"""Calling a role on batches of items, with failures isolated per item and progress logged."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Protocol, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")
P = TypeVar("P")

Skipped = tuple[str, str]  # (item_id, reason)


class Logger(Protocol):
    def info(self, message: str) -> None: ...


class Progress:
    """Items done / total, items/s and ETA, logged at most every `every_s` seconds (and when done)."""

    def __init__(self, log: Logger, what: str, total: int, every_s: float = 10.0):
        self.log, self.what, self.total, self.every_s = log, what, total, every_s
        self.done = 0
        self.start = self.last = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("inf")
            self.log.info(f"{self.what}: {self.done}/{self.total} items, {rate:.1f} items/s, ETA {eta:.0f} s")


def progress_or_none(log: Logger | None, what: str, total: int) -> Progress | None:
    return Progress(log, what, total) if log is not None else None


def run_batched(
    items: Sequence[T], batch_size: int, call: Callable[[Sequence[T]], list[R]], item_id: Callable[[T], str],
    progress: Progress | None = None,
) -> tuple[list[R | None], list[Skipped]]:
    """Call a role on batches; a failing batch is retried item by item so one bad item is skipped
    (with its reason) instead of failing the shard. Returns results aligned with items (None where
    skipped) and the skipped (item_id, reason) pairs."""
    results: list[R | None] = []
    skipped: list[Skipped] = []
    for batch in batches(items, batch_size):
        try:
            outputs = call(batch)
            if len(outputs) != len(batch):
                raise RuntimeError(f"the role returned {len(outputs)} results for {len(batch)} items")
            results.extend(outputs)
        except Exception:  # noqa: BLE001 - isolate the bad items below
            for item in batch:
                try:
                    results.append(call([item])[0])
                except Exception as exc:  # noqa: BLE001 - recorded, not dropped
                    results.append(None)
                    skipped.append((item_id(item), f"{type(exc).__name__}: {exc}"))
        if progress:
            progress.advance(len(batch))
    return results, skipped


def batches(items: Sequence[T], batch_size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def prepared_ahead(items: Sequence[T], batch_size: int, prepare: Callable[[Sequence[T]], P]
                   ) -> Iterator[tuple[Sequence[T], P]]:
    """Each batch with what `prepare` made of it (e.g. its images read from disk), the next batch
    prepared in a background thread while the caller runs the model on this one. One batch ahead:
    at most two batches' inputs are in memory."""
    chunks = batches(items, batch_size)
    with ThreadPoolExecutor(1, thread_name_prefix="prepare-batch") as pool:
        batch = next(chunks, None)
        upcoming = pool.submit(prepare, batch) if batch is not None else None
        while batch is not None:
            prepared = upcoming.result()
            following = next(chunks, None)
            upcoming = pool.submit(prepare, following) if following is not None else None
            yield batch, prepared
            batch = following
