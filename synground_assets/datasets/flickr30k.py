"""Flickr30k Entities: evaluation queries, one per annotated phrase of each sentence.

Files under `root`: `<split>.txt` (one image id a line), `Sentences/<id>.txt` (five sentences,
phrases marked as "[/EN#18/people A man] in [/EN#19/clothing an orange hat] ..."), and
`Annotations/<id>.xml` (VOC-style); images in `flickr30k-images/<id>.jpg` unless `images_dir`
says otherwise.

How the annotation is read, and why:
- An `<object>` may hold several `<name>` tags (entity chain ids); its box belongs to EVERY one of
  them. (The toolkit's Python helper keeps only the first; that loses boxes.)
- A phrase's hit region is ALL boxes of its chain, so `boxes_xyxy` lists each of them.
- `<bndbox>` coordinates are 1-based and inclusive (VOC). In the project's box format (0-based,
  x1/y1 exclusive) the same pixels are (xmin - 1, ymin - 1, xmax, ymax).
- Phrases typed `notvisual` (chain 0) and phrases whose chain has no box (`<nobndbox>`,
  `<scene>`, or no object at all) are skipped, as the benchmark does, and listed with the reason.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from synground_assets.datasets.common import (
    BoxXYXY,
    GroundingQuery,
    ReadResult,
    Skipped,
    box_problem,
    clip_to_image,
    describe_box,
    error_at,
    require_file,
)

SPLITS = ("train", "val", "test")
FLICKR_FIX = "use the files of the official Flickr30k Entities release (annotations.zip)"
# "[/EN#<chain id>/<type>[/<type>...] <words>]"; types are words such as people, bodyparts.
PHRASE_PATTERN = re.compile(r"\[/EN#(?P<chain>\d+)(?P<types>(?:/[\w-]+)+) (?P<text>[^\[\]]+)\]")


@dataclass(frozen=True)
class Phrase:
    chain_id: str
    types: tuple[str, ...]
    text: str
    first_word_index: int


@dataclass(frozen=True)
class Sentence:
    line_number: int
    text: str
    phrases: tuple[Phrase, ...]


@dataclass
class ImageAnnotation:
    """Boxes per chain id and the chains flagged as having no box."""

    image_size: tuple[int, int]
    boxes: dict[str, list[BoxXYXY]] = field(default_factory=dict)
    no_box: set[str] = field(default_factory=set)
    scene: set[str] = field(default_factory=set)


def read_flickr30k_entities(root: Path, split: str, images_dir: Path | None = None) -> ReadResult:
    """Evaluation queries of one split, with every skipped phrase listed."""
    if split not in SPLITS:
        raise error_at(f"split {split!r}", "not a Flickr30k Entities split", f"choose one of {SPLITS}")
    root = Path(root)
    images_dir = Path(images_dir) if images_dir is not None else root / "flickr30k-images"
    queries: list[GroundingQuery] = []
    skipped: list[Skipped] = []
    for image_id in read_split_ids(root / f"{split}.txt"):
        image_queries, image_skipped = queries_of_image(root, images_dir, image_id, split)
        queries.extend(image_queries)
        skipped.extend(image_skipped)
    return ReadResult(queries, skipped)


def read_split_ids(path: Path) -> list[str]:
    require_file(path, "split file", FLICKR_FIX)
    ids = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        image_id = line.strip()
        if not image_id:
            continue
        # Ids become file names, so only digits pass: this also stops "../x" reaching a path.
        if not image_id.isdigit():
            problem = f"{image_id!r} is not a Flickr30k image id (digits only)"
            raise error_at(f"{path}:{line_number}", problem, FLICKR_FIX)
        ids.append(image_id)
    return ids


def queries_of_image(
    root: Path, images_dir: Path, image_id: str, split: str
) -> tuple[list[GroundingQuery], list[Skipped]]:
    # image_id is digits only (read_split_ids), so these names cannot leave their folders.
    sentences_path = require_file(root / "Sentences" / f"{image_id}.txt", "sentence file", FLICKR_FIX)
    sentences = parse_sentence_file(sentences_path)
    annotation_path = require_file(root / "Annotations" / f"{image_id}.xml", "annotation file", FLICKR_FIX)
    annotation = parse_annotation_file(annotation_path)
    image_fix = f"point images_dir at the flickr30k-images folder holding {image_id}.jpg"
    image_path = require_file(images_dir / f"{image_id}.jpg", "image", image_fix)
    queries: list[GroundingQuery] = []
    skipped: list[Skipped] = []
    for sentence_index, sentence in enumerate(sentences):
        for phrase_index, phrase in enumerate(sentence.phrases):
            where = f"{sentences_path}:{sentence.line_number} [/EN#{phrase.chain_id} {phrase.text}]"
            reason = why_no_query(phrase, annotation)
            if reason:
                skipped.append(Skipped(where, reason))
                continue
            queries.append(
                GroundingQuery(
                    query_id=f"{image_id}:{sentence_index}:{phrase_index}",
                    image_path=image_path,
                    phrase=phrase.text,
                    boxes_xyxy=list(annotation.boxes[phrase.chain_id]),
                    image_size=annotation.image_size,
                    source={
                        "image_id": image_id, "split": split, "sentence_index": sentence_index,
                        "sentence": sentence.text, "chain_id": phrase.chain_id,
                        "phrase_types": list(phrase.types), "first_word_index": phrase.first_word_index,
                    },
                )
            )
    return queries, skipped


def why_no_query(phrase: Phrase, annotation: ImageAnnotation) -> str | None:
    """The benchmark's reason to skip a phrase, or None when it has a box."""
    if phrase.chain_id == "0" or "notvisual" in phrase.types:
        return "notvisual phrase"
    if annotation.boxes.get(phrase.chain_id):
        return None
    if phrase.chain_id in annotation.scene:
        return "scene entity without box"
    if phrase.chain_id in annotation.no_box:
        return "entity marked nobndbox"
    return "entity has no object in the annotation file"


def parse_sentence_file(path: Path) -> list[Sentence]:
    """One Sentence per non-empty line, as the toolkit counts them."""
    sentences = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            sentences.append(parse_sentence_line(line, f"{path}:{line_number}", line_number))
    return sentences


def parse_sentence_line(line: str, where: str, line_number: int) -> Sentence:
    words: list[str] = []
    phrases: list[Phrase] = []
    position = 0
    for match in PHRASE_PATTERN.finditer(line):
        words.extend(plain_words(line[position : match.start()], where))
        text = " ".join(match["text"].split())
        types = tuple(match["types"].strip("/").split("/"))
        phrases.append(Phrase(match["chain"], types, text, first_word_index=len(words)))
        words.extend(text.split())
        position = match.end()
    words.extend(plain_words(line[position:], where))
    return Sentence(line_number, " ".join(words), tuple(phrases))


def plain_words(segment: str, where: str) -> list[str]:
    """Words outside phrase markup; a stray bracket means markup the pattern could not read."""
    if "[" in segment or "]" in segment:
        bad = segment.strip()[:60]
        raise error_at(
            where, f"malformed phrase markup near {bad!r}; expected '[/EN#<id>/<type> words]'", FLICKR_FIX
        )
    return segment.split()


def parse_annotation_file(path: Path) -> ImageAnnotation:
    try:
        tree = ElementTree.parse(path)
    except ElementTree.ParseError as exc:
        line, column = exc.position
        raise error_at(f"{path}:{line}:{column}", f"not valid XML ({exc})", FLICKR_FIX) from exc
    root = tree.getroot()
    annotation = ImageAnnotation(image_size=(_int_of(root, "size/width", path), _int_of(root, "size/height", path)))
    for position, element in enumerate(root.findall("object")):
        add_object(annotation, element, f"{path} [object {position}]")
    return annotation


def add_object(annotation: ImageAnnotation, element: ElementTree.Element, where: str) -> None:
    """Give the object's box to every chain id it names, or record its no-box flags."""
    chain_ids = [(name.text or "").strip() for name in element.findall("name")]
    if not chain_ids or not all(chain_ids):
        raise error_at(where, "<object> without a <name> chain id", FLICKR_FIX)
    box_element = element.find("bndbox")
    if box_element is None:
        for flag, chains in (("nobndbox", annotation.no_box), ("scene", annotation.scene)):
            if _int_of(element, flag, where, default=0) > 0:
                chains.update(chain_ids)
        return
    box_xyxy = box_from_bndbox(box_element, where)
    problem = box_problem(box_xyxy, annotation.image_size)
    if problem:
        raise error_at(where, f"{problem}: {describe_box(box_xyxy, annotation.image_size)}", FLICKR_FIX)
    for chain_id in chain_ids:
        annotation.boxes.setdefault(chain_id, []).append(clip_to_image(box_xyxy, annotation.image_size))


def box_from_bndbox(element: ElementTree.Element, where: str) -> BoxXYXY:
    """1-based inclusive VOC corners -> 0-based box with exclusive x1/y1 (same pixels)."""
    xmin, ymin, xmax, ymax = (_int_of(element, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
    return (float(xmin - 1), float(ymin - 1), float(xmax), float(ymax))


def _int_of(element: ElementTree.Element, tag: str, where: object, default: int | None = None) -> int:
    text = element.findtext(tag)
    if text is None and default is not None:
        return default
    try:
        return int(float((text or "").strip()))
    except ValueError as exc:
        raise error_at(str(where), f"<{tag}> is {text!r}, not a number", FLICKR_FIX) from exc
