"""What makes an export a release: its own checked images, and a manifest of what it was built from.

- `place_images`: every image an export refers to is verified (PIL open + verify, then a full decode,
  and its size against the table's) and placed inside the export folder, as a hard link to the
  shard's file where the file system allows (no bytes copied; the file outlives the shard version
  that held it, since a publish never writes into a published file) or as a copy otherwise. An image
  that fails is skipped with its reason: the export leaves its item out and records it.
- `file_digests` / `write_manifest`: `manifest.json`, the sha256 and size of every file of the export,
  beside the shard versions (publish ids) it read, the counts, the skipped images and the code version.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from synground_assets.datasets.hub_formats import SkippedImage

MANIFEST_FILE = "manifest.json"
ImageMode = Literal["auto", "hardlink", "copy"]
# A hard link fails with these where the file system cannot hold one here: another device (EXDEV),
# no hard links (EPERM on some FUSE / SMB mounts, ENOTSUP, EOPNOTSUPP), or a file at its link limit.
NO_LINK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}
CHUNK = 1 << 20


@dataclass
class PlacedImages:
    """What `place_images` did: how each kept image got into the export, and what it skipped."""

    linked: int = 0
    copied: int = 0
    bytes: int = 0  # the images' total size (on disk only once with hard links)
    skipped: list[SkippedImage] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "hardlink" if not self.copied else "copy" if not self.linked else "mixed"


def image_problem(path: Path, size: tuple[int, int] | None = None) -> str | None:
    """Why an image cannot be shipped (empty, truncated, not an image, another size), or None.
    `verify` checks the structure without decoding; only `load` finds truncated pixel data."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:  # verify leaves the image unusable: open it again to decode
            image.load()
            decoded = image.size
    except FileNotFoundError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for broken files
        return f"does not decode ({type(exc).__name__}: {exc})"
    if size is not None and tuple(decoded) != tuple(size):
        return f"decodes to {decoded[0]}x{decoded[1]}, the table says {size[0]}x{size[1]}"
    return None


def place_file(source: Path, target: Path, mode: ImageMode) -> bool:
    """Put `source` at `target`: a hard link (True) or a copy (False). `auto` links where it can."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode != "copy":
        try:
            os.link(source, target)
            return True
        except OSError as exc:
            if mode == "hardlink" or exc.errno not in NO_LINK_ERRNOS:
                raise
    shutil.copyfile(source, target)
    return False


def place_images(images: list[tuple[str, Path, Path, tuple[int, int]]], folder: Path,
                 mode: ImageMode = "auto") -> PlacedImages:
    """images: (item_id, source file, path inside `folder`, the table's (width, height)), one per item.
    Each is verified, then linked or copied; a failing one is skipped with its reason."""
    placed = PlacedImages()
    for item_id, source, relative, size in images:
        if not source.is_file():
            raise FileNotFoundError(
                f"image {source} of item {item_id!r} is gone: its shard was republished while the export ran; "
                "rerun the exports asset")
        problem = image_problem(source, size)
        if problem:
            placed.skipped.append(SkippedImage(item_id, relative.as_posix(), problem))
            continue
        if place_file(source, folder / relative, mode):
            placed.linked += 1
        else:
            placed.copied += 1
        placed.bytes += source.stat().st_size
    return placed


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(folder: Path, exclude: tuple[str, ...] = (MANIFEST_FILE,)) -> dict[str, dict]:
    """{relative path: {"sha256", "bytes"}} of every file under `folder`, in path order."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in exclude)
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_of(p), "bytes": p.stat().st_size} for p in files}


def write_manifest(folder: Path, manifest: dict) -> Path:
    path = folder / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def verify_manifest(folder: Path) -> list[str]:
    """The files of an export whose bytes differ from its manifest, or that are missing or extra."""
    recorded = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
    found = file_digests(folder, exclude=(MANIFEST_FILE, "publish.json"))
    return sorted(name for name in recorded.keys() | found.keys() if recorded.get(name) != found.get(name))
