"""RefCOCO+ (and RefCOCO, RefCOCOg) as the refer toolkit ships them: evaluation queries.

Files: `<data_dir>/refs(unc).p` (a pickle: a list of refs, each {ref_id, ann_id, image_id, split,
sentences: [{sent, raw, sent_id, tokens}], file_name, category_id}), `<data_dir>/instances.json`
(COCO format) and the COCO train2014 image folder. One query per sentence; the split is the
ref's `split` (RefCOCO+ has train, val, testA, testB).

Two details that are easy to get wrong:
- The image file is `instances.json`'s images[i].file_name for the ref's image_id. The ref's own
  `file_name` carries an annotation suffix (`..._<ann_id>.jpg`) and is not a file on disk.
- The box is the COCO annotation's `bbox` for the ref's ann_id, in [x, y, w, h] pixels.

The pickle comes from outside, and unpickling can run any code it names. It is read with
`RestrictedUnpickler`, which refuses every global, so only plain containers and scalars load:
exactly what a refs file holds.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

from synground_assets.datasets.common import (
    BoxXYXY,
    GroundingQuery,
    ReadResult,
    Skipped,
    box_problem,
    box_xywh_to_xyxy,
    clip_to_image,
    describe_box,
    error_at,
    load_json,
    require_file,
    resolve_inside,
)

REFS_FILE = "refs(unc).p"
INSTANCES_FILE = "instances.json"
REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")
SENTENCE_KEYS = ("sent", "sent_id")
REFER_FIX = "use the files of the refer toolkit release (refs(unc).p and instances.json from the same folder)"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that loads lists, dicts, strings and numbers, and refuses every class or
    function a pickle names, before anything runs."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(
            f"refused to load the global {module}.{name}: only plain lists, dicts, strings and "
            "numbers are allowed"
        )


def load_restricted_pickle(path: Path) -> object:
    """Load a pickle of plain data. Anything else, or a damaged file, raises DatasetError."""
    data = require_file(path, "refs pickle", REFER_FIX).read_bytes()
    # Python 2 wrote the refer toolkit's pickles; its byte strings are UTF-8 text.
    unpickler = RestrictedUnpickler(io.BytesIO(data), encoding="utf-8")
    try:
        return unpickler.load()
    # Untrusted bytes can fail in many ways inside the unpickler; each means "not a refs file".
    except Exception as exc:
        raise error_at(str(path), f"not a plain-data pickle ({exc})", REFER_FIX) from exc


@dataclass(frozen=True)
class CocoImage:
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class CocoIndex:
    """The two lookups a ref needs from instances.json."""

    path: Path
    images: dict[int, CocoImage]
    annotation_boxes: dict[int, tuple[int, list[float]]]  # ann_id -> (image_id, [x, y, w, h])

    @classmethod
    def load(cls, path: Path) -> CocoIndex:
        data = load_json(path, "COCO instances file", REFER_FIX)
        if not isinstance(data, dict):
            raise error_at(str(path), "top level is not a JSON object", REFER_FIX)
        images = dict(_parse_entries(data, "images", path, _parse_image))
        boxes = dict(_parse_entries(data, "annotations", path, _parse_annotation))
        return cls(path, images, boxes)


def _parse_image(entry: dict) -> tuple[int, CocoImage]:
    return int(entry["id"]), CocoImage(str(entry["file_name"]), int(entry["width"]), int(entry["height"]))


def _parse_annotation(entry: dict) -> tuple[int, tuple[int, list[float]]]:
    bbox = [float(value) for value in entry["bbox"]]
    if len(bbox) != 4:
        raise ValueError("bbox is not [x, y, w, h]")
    return int(entry["id"]), (int(entry["image_id"]), bbox)


def _parse_entries(data: dict, key: str, path: Path, parse) -> list:
    """Parse every entry of a COCO list; a bad entry names its position."""
    entries = data.get(key)
    if not isinstance(entries, list):
        raise error_at(f"{path} [{key}]", f"missing list '{key}'", REFER_FIX)
    parsed = []
    for position, entry in enumerate(entries):
        try:
            parsed.append(parse(entry))
        except (KeyError, TypeError, ValueError) as exc:
            raise error_at(f"{path} [{key}[{position}]]", f"malformed entry ({exc!r})", REFER_FIX) from exc
    return parsed


def read_refcoco(
    data_dir: Path, images_dir: Path, split: str, refs_file: str = REFS_FILE
) -> ReadResult:
    """Evaluation queries of one split: one per sentence, with the referred object's box."""
    refs_path = Path(data_dir) / refs_file
    refs = load_refs(refs_path)
    coco = CocoIndex.load(Path(data_dir) / INSTANCES_FILE)
    queries: list[GroundingQuery] = []
    skipped: list[Skipped] = []
    checked_images: set[Path] = set()
    for ref in refs_of_split(refs, split, refs_path):
        where = f"{refs_path} [ref_id {ref['ref_id']}]"
        sentences, ref_skipped = usable_sentences(ref, where)
        skipped.extend(ref_skipped)
        if sentences:
            queries.extend(queries_of_ref(ref, sentences, coco, Path(images_dir), where, checked_images))
    return ReadResult(queries, skipped)


def usable_sentences(ref: dict, where: str) -> tuple[list[dict], list[Skipped]]:
    """Sentences with text; an empty one, or a ref without any, is skipped and listed."""
    if not ref["sentences"]:
        return [], [Skipped(where, "ref has no sentences")]
    usable = [sentence for sentence in ref["sentences"] if sentence["sent"].strip()]
    skipped = [
        Skipped(f"{where} sent_id {sentence['sent_id']}", "empty sentence")
        for sentence in ref["sentences"]
        if not sentence["sent"].strip()
    ]
    return usable, skipped


def load_refs(path: Path) -> list[dict]:
    refs = load_restricted_pickle(path)
    if not isinstance(refs, list):
        raise error_at(str(path), f"expected a list of refs, found {type(refs).__name__}", REFER_FIX)
    for position, ref in enumerate(refs):
        check_ref(ref, f"{path} [entry {position}]")
    return refs


def check_ref(ref: object, where: str) -> None:
    if not isinstance(ref, dict):
        raise error_at(where, f"expected a dict, found {type(ref).__name__}", REFER_FIX)
    missing = [key for key in REF_KEYS if key not in ref]
    if missing:
        raise error_at(where, f"ref misses {missing}", REFER_FIX)
    not_ints = [key for key in ("ref_id", "ann_id", "image_id") if not _is_int(ref[key])]
    if not_ints:
        raise error_at(where, f"{not_ints} must be integers", REFER_FIX)
    if not isinstance(ref["sentences"], list):
        raise error_at(where, "'sentences' is not a list", REFER_FIX)
    for position, sentence in enumerate(ref["sentences"]):
        if not isinstance(sentence, dict) or any(key not in sentence for key in SENTENCE_KEYS):
            raise error_at(f"{where} sentences[{position}]", f"sentence misses one of {SENTENCE_KEYS}", REFER_FIX)
        if not isinstance(sentence["sent"], str):
            raise error_at(f"{where} sentences[{position}]", "'sent' is not text", REFER_FIX)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def refs_of_split(refs: list[dict], split: str, refs_path: Path) -> list[dict]:
    chosen = [ref for ref in refs if ref["split"] == split]
    if not chosen:
        present = sorted({str(ref["split"]) for ref in refs})
        raise error_at(str(refs_path), f"no refs in split {split!r}", f"choose one of {present}")
    return chosen


def queries_of_ref(
    ref: dict, sentences: list[dict], coco: CocoIndex, images_dir: Path, where: str, checked_images: set[Path]
) -> list[GroundingQuery]:
    image = coco.images.get(int(ref["image_id"]))
    if image is None:
        raise error_at(where, f"image_id {ref['image_id']} is not in {coco.path}", REFER_FIX)
    image_path = resolve_inside(images_dir, image.file_name, f"{coco.path} [image {ref['image_id']}]")
    if image_path not in checked_images:
        image_fix = f"point images_dir at the COCO train2014 folder holding {image.file_name}"
        require_file(image_path, f"image of {where}", image_fix)
        checked_images.add(image_path)
    box_xyxy = box_of_ref(ref, coco, (image.width, image.height), where)
    return [
        GroundingQuery(
            query_id=f"{ref['ref_id']}:{sentence['sent_id']}",
            image_path=image_path,
            phrase=" ".join(sentence["sent"].split()),
            boxes_xyxy=[box_xyxy],
            image_size=(image.width, image.height),
            source={
                "ref_id": ref["ref_id"], "ann_id": ref["ann_id"], "image_id": ref["image_id"],
                "sent_id": sentence["sent_id"], "split": ref["split"], "raw": sentence.get("raw"),
                "category_id": ref.get("category_id"),
            },
        )
        for sentence in sentences
    ]


def box_of_ref(ref: dict, coco: CocoIndex, image_size: tuple[int, int], where: str) -> BoxXYXY:
    annotation = coco.annotation_boxes.get(int(ref["ann_id"]))
    if annotation is None:
        raise error_at(where, f"ann_id {ref['ann_id']} is not in {coco.path}", REFER_FIX)
    annotation_image_id, bbox_xywh = annotation
    if annotation_image_id != int(ref["image_id"]):
        raise error_at(
            where, f"ann_id {ref['ann_id']} belongs to image {annotation_image_id}, not {ref['image_id']}", REFER_FIX
        )
    box_xyxy = box_xywh_to_xyxy(*bbox_xywh)
    problem = box_problem(box_xyxy, image_size)
    if problem:
        where_in_coco = f"{coco.path} [annotation {ref['ann_id']}]"
        raise error_at(where_in_coco, f"{problem}: {describe_box(box_xyxy, image_size)}", REFER_FIX)
    return clip_to_image(box_xyxy, image_size)
