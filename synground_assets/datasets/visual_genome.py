"""Visual Genome region descriptions: the real training triplets AMC trains on.

Files: `region_descriptions.json` (a list, one entry per image: {"id", "regions": [{"region_id",
"image_id", "x", "y", "width", "height", "phrase"}]}) and the image folder (`<image_id>.jpg`,
directly or in the release's `VG_100K` / `VG_100K_2` parts). `image_data.json` (entries with
"image_id" or, in v1.0, "id", plus "width" and "height") is optional: with it, boxes are
checked against their image.

VG boxes are 0-based [x, y, width, height]. Regions with an empty phrase, an empty box, or a box
outside a known image size are skipped and listed with the reason, as VG training pipelines do;
a malformed entry or a missing image raises DatasetError.
"""

from __future__ import annotations

from pathlib import Path

from synground_assets.datasets.common import (
    GroundingQuery,
    ReadResult,
    Skipped,
    box_problem,
    box_xywh_to_xyxy,
    clip_to_image,
    error_at,
    load_json,
)

IMAGE_PARTS = (".", "VG_100K", "VG_100K_2")
VG_FIX = "use the official Visual Genome release files (region_descriptions.json, image_data.json)"


def read_visual_genome(
    regions_path: Path,
    images_dir: Path,
    image_data_path: Path | None = None,
    max_images: int | None = None,
) -> ReadResult:
    """Training triplets, one query per usable region; `max_images` reads only the first entries."""
    regions_path = Path(regions_path)
    entries = load_json(regions_path, "region descriptions", VG_FIX)
    if not isinstance(entries, list):
        raise error_at(str(regions_path), "top level is not a list of image entries", VG_FIX)
    sizes = read_image_sizes(Path(image_data_path)) if image_data_path is not None else {}
    queries: list[GroundingQuery] = []
    skipped: list[Skipped] = []
    for position, entry in enumerate(entries[:max_images]):
        where = f"{regions_path} [{position}]"
        image_id = _image_id_of(entry, where)
        image_path = find_image(Path(images_dir), image_id, where)
        for region_position, region in enumerate(entry["regions"]):
            region_where = f"{where}.regions[{region_position}]"
            query, reason = query_of_region(region, image_id, image_path, sizes.get(image_id), region_where)
            if reason:
                skipped.append(Skipped(region_where, reason))
            else:
                queries.append(query)
    return ReadResult(queries, skipped)


def _image_id_of(entry: object, where: str) -> int:
    if not isinstance(entry, dict) or not isinstance(entry.get("regions"), list):
        raise error_at(where, "entry is not {'id': ..., 'regions': [...]}", VG_FIX)
    image_id = entry.get("id", entry.get("image_id"))
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        raise error_at(where, f"image id {image_id!r} is not an integer", VG_FIX)
    return image_id


def read_image_sizes(path: Path) -> dict[int, tuple[int, int]]:
    entries = load_json(path, "image data", VG_FIX)
    if not isinstance(entries, list):
        raise error_at(str(path), "top level is not a list of images", VG_FIX)
    sizes = {}
    for position, entry in enumerate(entries):
        try:
            image_id = entry.get("image_id", entry.get("id"))
            sizes[int(image_id)] = (int(entry["width"]), int(entry["height"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise error_at(f"{path} [{position}]", f"malformed image entry ({exc!r})", VG_FIX) from exc
    return sizes


def find_image(images_dir: Path, image_id: int, where: str) -> Path:
    """The image file in the folder or one of the release's two parts."""
    for part in IMAGE_PARTS:
        candidate = images_dir / part / f"{image_id}.jpg"
        if candidate.is_file():
            return candidate
    raise error_at(
        where,
        f"image {image_id}.jpg not found in {images_dir} (nor in its VG_100K, VG_100K_2 folders)",
        "download both Visual Genome image parts into images_dir",
    )


def query_of_region(
    region: object, image_id: int, image_path: Path, image_size: tuple[int, int] | None, where: str
) -> tuple[GroundingQuery | None, str | None]:
    """A query for a usable region, or the reason it is skipped. A malformed region raises."""
    try:
        box_xyxy = box_xywh_to_xyxy(region["x"], region["y"], region["width"], region["height"])
        region_id = int(region["region_id"])
        phrase = " ".join(str(region["phrase"]).split())
    except (KeyError, TypeError, ValueError) as exc:
        raise error_at(where, f"malformed region ({exc!r})", VG_FIX) from exc
    if region.get("image_id", image_id) != image_id:
        return None, "region image_id differs from its image entry"
    if not phrase:
        return None, "empty phrase"
    problem = box_problem(box_xyxy, image_size)
    if problem:
        return None, problem
    query = GroundingQuery(
        query_id=str(region_id),
        image_path=image_path,
        phrase=phrase,
        boxes_xyxy=[clip_to_image(box_xyxy, image_size)],
        image_size=image_size,
        source={"image_id": image_id, "region_id": region_id},
    )
    return query, None
