"""Source samplers over real data on disk: what a description is made from.

- `ConceptVocabularySampler` (Concept2Text): concepts drawn from a vocabulary file, optionally with
  an attribute ("a wooden chair"). The default vocabulary is COCO's 80 categories
  (`synground_assets/data/concepts.txt`, attributes in `data/attributes.txt`).
- `ImageFolderSampler` (Image2Text): real images from a folder or a COCO-style image list.
- `CaptionsSampler` (Text2Text, Concatenation): a real image with all its captions, from a
  COCO-captions-style JSON (`{"images": [{id, file_name}], "annotations": [{image_id, caption}]}`).

Each item's choice depends on its seed alone (`random.Random(seed)`), so a shard is reproducible and
items are drawn independently (with replacement). A `tiny:photos` location is the small photo set
that `synground_assets/tiny/photos.py` writes for tests.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Sequence

from synground_assets import tiny
from synground_assets.adapters.loading import ModelLoadError
from synground_assets.roles.base import AdapterInfo, SourceItem, SourceSampler

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def read_vocabulary(path: str | Path | None, default_name: str) -> list[str]:
    """One entry per line; blank lines and '#' comments skipped; duplicates dropped."""
    if path is None:
        text = (resources.files("synground_assets") / "data" / default_name).read_text()
    else:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"vocabulary file {str(path)!r} does not exist")
        text = path.read_text()
    entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    entries = list(dict.fromkeys(entries))
    if not entries:
        raise ModelLoadError(f"vocabulary {path or default_name!r} has no entries")
    return entries


def resolve_data_path(location: str, what: str) -> Path:
    """A data folder or file; `tiny:photos` (or `tiny:photos/<file>`) is the tiny photo set."""
    if location.startswith(tiny.PREFIX):
        name, _, rest = location[len(tiny.PREFIX):].partition("/")
        if name != "photos":
            raise ModelLoadError(f"{what}: unknown tiny data {location!r}; expected tiny:photos")
        path = tiny.ensure_tiny(name) / rest if rest else tiny.ensure_tiny(name)
    else:
        path = Path(location).expanduser()
    if not path.exists():
        raise ModelLoadError(f"{what}: {str(path)!r} does not exist")
    return path


def _read_coco(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        data["images"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{str(path)!r} is not a COCO-style JSON with an 'images' list: {exc}") from exc
    return data


class ConceptVocabularySampler(SourceSampler):
    """min_concepts..max_concepts distinct concepts per item, each with an attribute at
    `attribute_probability`."""

    def __init__(self, vocabulary: str | None = None, attributes: str | None = None, min_concepts: int = 1,
                 max_concepts: int = 3, attribute_probability: float = 0.3):
        self.concepts = read_vocabulary(vocabulary, "concepts.txt")
        self.attributes = read_vocabulary(attributes, "attributes.txt")
        if not 1 <= min_concepts <= max_concepts <= len(self.concepts):
            raise ModelLoadError(f"need 1 <= min_concepts <= max_concepts <= {len(self.concepts)} "
                                 f"but got {min_concepts}, {max_concepts}")
        if not 0 <= attribute_probability <= 1:
            raise ModelLoadError(f"attribute_probability must be in [0, 1] but is {attribute_probability}")
        self.min_concepts, self.max_concepts = min_concepts, max_concepts
        self.attribute_probability = attribute_probability
        self.info = AdapterInfo("concept-vocabulary", vocabulary or "synground_assets/data/concepts.txt", settings={
            "attributes": attributes or "synground_assets/data/attributes.txt", "min_concepts": min_concepts,
            "max_concepts": max_concepts, "attribute_probability": attribute_probability})

    def sample(self, item_ids: Sequence[str], seeds: Sequence[int]) -> list[SourceItem]:
        items = []
        for item, seed in zip(item_ids, seeds, strict=True):
            rng = random.Random(seed)
            chosen = rng.sample(self.concepts, rng.randint(self.min_concepts, self.max_concepts))
            concepts = tuple(
                f"{rng.choice(self.attributes)} {c}" if rng.random() < self.attribute_probability else c for c in chosen
            )
            items.append(SourceItem(item_id=item, seed=seed, concepts=concepts))
        return items


def image_problem(path: str) -> str | None:
    """Why an image file cannot be decoded (missing, empty, truncated, not an image), or None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()  # a full decode: a truncated file opens, and fails only here
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        return f"{type(exc).__name__}: {exc}"
    return None


class ImageFolderSampler(SourceSampler):
    """A real image per item, from a folder (recursively) or a COCO-style JSON's image list.

    An item's image is `paths[i]` for an index its seed draws. A file that cannot be decoded is
    dropped from the pool the first time a draw meets it (checked once per process, recorded by
    `take_dropped`) and the draw moves on to the next readable file, so a folder with unreadable
    files costs no item (they were all skipped downstream, 11 of 16 per shard in one folder)."""

    def __init__(self, images: str, image_root: str | None = None):
        source = resolve_data_path(images, "image source")
        if source.is_dir():
            self.paths = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            root = resolve_data_path(image_root, "image_root") if image_root else source.parent
            self.paths = [str(root / image["file_name"]) for image in _read_coco(source)["images"]]
        if not self.paths:
            raise ModelLoadError(f"image source {str(source)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.info = AdapterInfo("image-folder", images, settings={"image_root": image_root, "images": len(self.paths)})
        self.readable: set[str] = set()
        self.unreadable: dict[str, str] = {}  # path -> why, dropped from the pool
        self._dropped: list[tuple[str, str, str]] = []  # (item_id, path, why) not yet taken

    def sample(self, item_ids: Sequence[str], seeds: Sequence[int]) -> list[SourceItem]:
        return [SourceItem(item_id=item, seed=seed, source_image=self._draw(item, seed))
                for item, seed in zip(item_ids, seeds, strict=True)]

    def _draw(self, item: str, seed: int) -> str:
        start = random.Random(seed).randrange(len(self.paths))  # = the former `choice(paths)`'s index
        for offset in range(len(self.paths)):
            path = self.paths[(start + offset) % len(self.paths)]
            if path in self.unreadable:
                continue
            if path not in self.readable:
                problem = image_problem(path)
                if problem:
                    self.unreadable[path] = problem
                    self._dropped.append((item, path, problem))
                    continue
                self.readable.add(path)
            return path
        raise ModelLoadError(f"image source {self.info.model_id!r}: none of its {len(self.paths)} images can be read; "
                             f"e.g. {next(iter(self.unreadable.items()))}")

    def take_dropped(self) -> list[tuple[str, str, str]]:
        """(item_id, path, why) of each file dropped from the pool since the last call: the item whose
        draw met it first."""
        dropped, self._dropped = self._dropped, []
        return dropped


class CaptionsSampler(SourceSampler):
    """A real image and all its captions per item, from a COCO-captions-style JSON."""

    def __init__(self, captions: str, image_root: str | None = None, max_captions: int = 5):
        source = resolve_data_path(captions, "captions")
        data = _read_coco(source)
        root = resolve_data_path(image_root, "image_root") if image_root else source.parent
        by_image: dict[object, list[str]] = defaultdict(list)
        for annotation in data.get("annotations", []):
            by_image[annotation["image_id"]].append(" ".join(str(annotation["caption"]).split()))
        self.records = [
            (str(root / image["file_name"]), tuple(by_image[image["id"]][:max_captions]))
            for image in data["images"] if by_image.get(image["id"])
        ]
        if not self.records:
            raise ModelLoadError(f"captions file {str(source)!r} has no image with a caption")
        self.info = AdapterInfo("coco-captions", captions, settings={"image_root": image_root,
                                                                     "max_captions": max_captions,
                                                                     "images": len(self.records)})

    def sample(self, item_ids: Sequence[str], seeds: Sequence[int]) -> list[SourceItem]:
        items = []
        for item, seed in zip(item_ids, seeds, strict=True):
            image, captions = random.Random(seed).choice(self.records)
            items.append(SourceItem(item_id=item, seed=seed, source_image=image, source_captions=captions))
        return items
