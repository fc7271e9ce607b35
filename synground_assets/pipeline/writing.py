"""Image files written in the background while the stage goes on with the next batch.

PNG encoding is the asset layer's biggest per-item cost (a 512 px image takes some 30-120 ms of
zlib on one core, as long as a GPU takes to draw it). Pillow releases the GIL while it encodes, so
a few threads encode and write the images of batch k while the model works on batch k+1. At most
`max_pending` images wait for a thread, so memory stays flat whatever the shard size; `close`
waits for every file and raises the first error, so a shard is never published half-written.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from PIL import Image


class ImageFiles(Protocol):
    """Where a stage puts the image files of its shard as it goes (file: a path in the shard folder)."""

    def put(self, file: str, image: Image.Image) -> None: ...

    def discard(self, file: str) -> None:
        """Take back a file put earlier (an image found to be a duplicate once the shard is drawn)."""


class InMemoryImages(dict):
    """The images kept in memory (file -> image), for a caller that writes them itself."""

    def put(self, file: str, image: Image.Image) -> None:
        self[file] = image

    def discard(self, file: str) -> None:
        self.pop(file, None)


class PngWriter:
    """`put(file, image)` writes `folder/file` as PNG (the same bytes as `image.save(path, "PNG")`);
    `discard(file)` removes it again once written."""

    def __init__(self, folder: Path, workers: int | None = None, max_pending: int = 64):
        self.folder = folder
        self._pool = ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1), thread_name_prefix="png-writer")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._futures: list[Future] = []
        self._folders: set[Path] = set()
        self._discarded: list[Path] = []

    def put(self, file: str, image: Image.Image) -> None:
        path = self.folder / file
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        self._slots.acquire()  # blocks while max_pending images wait: the model waits, memory does not grow
        future = self._pool.submit(image.save, path, format="PNG")
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def discard(self, file: str) -> None:
        self._discarded.append(self.folder / file)

    def close(self) -> None:
        """Wait for every file, then remove the discarded ones; the first failure is raised."""
        try:
            for future in self._futures:
                error = future.exception()
                if error is not None:
                    raise OSError(f"writing an image into {self.folder} failed: {error}") from error
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for path in self._discarded:
            path.unlink(missing_ok=True)

    def __enter__(self) -> PngWriter:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:  # the stage failed: stop writing, the staging folder is thrown away
            self._pool.shutdown(wait=True, cancel_futures=True)
