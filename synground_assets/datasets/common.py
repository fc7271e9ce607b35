"""What every dataset reader returns, and the checks the readers share.

A reader turns files users already have on disk into `GroundingQuery` records: one phrase, the
image it refers to, and every box that counts as a hit. Nothing vanishes silently: what a reader
leaves out by the dataset's standard practice (a phrase without a box, a bad Visual Genome
region) is listed in `ReadResult.skipped` with its reason; anything else that is wrong raises
`DatasetError`, whose message names the file, the line or key, and the fix.

Dataset files come from outside, so a file name read from them is checked before it is joined to
a folder (`resolve_inside`), and pickles are never loaded with the unrestricted loader.

Box format as in `roles.base`: box_xyxy = (x0, y0, x1, y1) in pixels, x1/y1 exclusive.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

BoxXYXY = tuple[float, float, float, float]

# Annotation tools round coordinates, so a box may overrun its image by a pixel; such a box is
# clipped. A box further outside belongs to another image (mismatched files) and is refused.
BOX_TOLERANCE_PX = 1.0


class DatasetError(ValueError):
    """A dataset file that does not read as its format says. The message names the file, the
    line or key, and the fix."""


@dataclass
class GroundingQuery:
    """One phrase to ground in one image: an evaluation query or a training triplet.

    `boxes_xyxy` holds every box that counts: a pointing-game hit is a point inside ANY of them
    (a Flickr30k entity may have several boxes). `image_size` is (width, height) when the
    dataset states it. `source` keeps the dataset's own ids so a result can be traced back.
    """

    query_id: str
    image_path: Path
    phrase: str
    boxes_xyxy: list[BoxXYXY]
    image_size: tuple[int, int] | None = None
    source: dict = field(default_factory=dict)


class Skipped(NamedTuple):
    """Something a reader left out on purpose: where it is in the files, and why."""

    where: str
    reason: str


@dataclass
class ReadResult:
    queries: list[GroundingQuery]
    skipped: list[Skipped] = field(default_factory=list)

    def skipped_by_reason(self) -> dict[str, int]:
        """Counts per reason, for asset metadata and logs."""
        return dict(Counter(item.reason for item in self.skipped))


def error_at(where: str, problem: str, fix: str) -> DatasetError:
    return DatasetError(f"{where}: {problem}. Fix: {fix}.")


def require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise error_at(str(path), f"{what} not found", fix)
    return path


def load_json(path: Path, what: str, fix: str) -> object:
    """Parse a JSON file; a syntax error names the line and column."""
    require_file(path, what, fix)
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise error_at(
            f"{path}:{exc.lineno}:{exc.colno}", f"not valid JSON ({exc.msg})", fix
        ) from exc
    except UnicodeDecodeError as exc:
        raise error_at(str(path), f"not UTF-8 text ({exc.reason})", fix) from exc


def resolve_inside(root: Path, relative: str, where: str) -> Path:
    """Join a file name read from a dataset file to its folder, refusing names that leave it.

    The check is on the name itself (no absolute paths, no '..'), not on resolved paths, so an
    image folder that is a symlink to another disk still works.
    """
    name = str(relative).replace("\\", "/")
    parts = PurePosixPath(name).parts
    leaves_root = not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]
    if leaves_root:
        raise error_at(
            where,
            f"file name {relative!r} points outside {root}",
            "dataset file names must be relative paths inside the dataset folder; "
            "replace the file with the official release",
        )
    return root.joinpath(*parts)


def box_xywh_to_xyxy(x: float, y: float, width: float, height: float) -> BoxXYXY:
    return (float(x), float(y), float(x) + float(width), float(y) + float(height))


def box_problem(box: BoxXYXY, image_size: tuple[int, int] | None) -> str | None:
    """Why a box cannot be used, or None. Readers raise or skip on the reason, as their
    dataset's practice is; the reasons are fixed strings so skip counts group by them."""
    x0, y0, x1, y1 = box
    if not all(math.isfinite(value) for value in box):
        return "box has a non-finite coordinate"
    if x1 <= x0 or y1 <= y0:
        return "empty box (x1 <= x0 or y1 <= y0)"
    if image_size is not None:
        width, height = image_size
        tolerance = BOX_TOLERANCE_PX
        if x0 < -tolerance or y0 < -tolerance or x1 > width + tolerance or y1 > height + tolerance:
            return "box outside its image"
    return None


def clip_to_image(box: BoxXYXY, image_size: tuple[int, int] | None) -> BoxXYXY:
    if image_size is None:
        return box
    width, height = image_size
    x0, y0, x1, y1 = box
    return (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))


def describe_box(box: BoxXYXY, image_size: tuple[int, int] | None) -> str:
    """A box and its image size, for error messages."""
    corners = "(" + ", ".join(f"{value:g}" for value in box) + ")"
    return corners if image_size is None else f"{corners} in a {image_size[0]}x{image_size[1]} image"
