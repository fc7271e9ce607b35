"""The procedural "shapes" world: every role of the pipeline, played without a model.

Coloured shapes on a noisy background. The describer writes a description from sampled concepts
(the Concept2Text role), the generator renders *the description* (it parses objects and spatial
relations from the text, as a text-to-image model would), the phrase extractor reads the text alone
and the detector finds each phrase's object from the pixels alone. The renderer's true layout is
returned as `GeneratedImage.ground_truth`: a test and evaluation oracle, never used as boxes.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from synground_assets.roles.base import (
    AdapterInfo,
    Describer,
    Detection,
    Detector,
    GeneratedImage,
    GeneratedText,
    ImageGenerator,
    PhraseCandidates,
    PhraseExtractor,
    SourceItem,
    SourceSampler,
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "green": (34, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 25),
    "purple": (140, 55, 180),
    "orange": (245, 125, 15),
}
SHAPES = ("circle", "square", "triangle", "diamond")
RELATIONS = ("to the left of", "to the right of", "above", "below")
VERSION = "shapes-v1"

_OBJECT = rf"\b(?:a|an) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b"
_OBJECT_RE = re.compile(_OBJECT, re.IGNORECASE)
_RELATION_RE = re.compile(rf"{_OBJECT} ({'|'.join(RELATIONS)}) {_OBJECT}", re.IGNORECASE)
_PAIR_TEMPLATES = ("{a} {rel} {b}", "{a} sitting {rel} {b}", "{a} placed {rel} {b}")
_SCENE_TEMPLATES = (
    "A picture of {clauses}.",
    "There is {clauses}.",
    "This image shows {clauses}.",
    "A simple drawing with {clauses}.",
    "{Clauses} on a grey background.",
)


def article(colour: str) -> str:
    return "an" if colour[0] in "aeiou" else "a"


def object_phrase(concept: str) -> str:
    """'orange circle' -> 'an orange circle'."""
    return f"{article(concept)} {concept}"


def parse_objects(text: str) -> list[tuple[str, str]]:
    """(colour, shape) of every object named in a text, in order, without repeats."""
    seen: list[tuple[str, str]] = []
    for match in _OBJECT_RE.finditer(text):
        obj = (match.group(1).lower(), match.group(2).lower())
        if obj not in seen:
            seen.append(obj)
    return seen


def parse_relations(text: str) -> list[tuple[tuple[str, str], str, tuple[str, str]]]:
    return [
        ((m.group(1).lower(), m.group(2).lower()), m.group(3).lower(), (m.group(4).lower(), m.group(5).lower()))
        for m in _RELATION_RE.finditer(text)
    ]


def _join(clauses: list[str]) -> str:
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]


class ShapesConceptSampler(SourceSampler):
    """2-4 distinct (colour, shape) concepts per item."""

    def __init__(self, min_objects: int = 2, max_objects: int = 4):
        if not 1 <= min_objects <= max_objects <= len(COLOURS) * len(SHAPES):
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        self.min_objects, self.max_objects = min_objects, max_objects
        self.info = AdapterInfo("shapes", VERSION, settings={"min_objects": min_objects, "max_objects": max_objects})

    def sample(self, item_ids: Sequence[str], seeds: Sequence[int]) -> list[SourceItem]:
        vocabulary = [f"{c} {s}" for c in COLOURS for s in SHAPES]
        items = []
        for item, seed in zip(item_ids, seeds, strict=True):
            rng = random.Random(seed)
            count = rng.randint(self.min_objects, self.max_objects)
            items.append(SourceItem(item_id=item, seed=seed, concepts=tuple(rng.sample(vocabulary, count))))
        return items


class ShapesDescriber(Describer):
    """Concept2Text without an LLM: templates, some with spatial relations between two objects."""

    def __init__(self, relation_probability: float = 0.6):
        self.relation_probability = relation_probability
        self.info = AdapterInfo("shapes", VERSION, settings={"relation_probability": relation_probability})

    def describe(self, items: Sequence[SourceItem]) -> list[GeneratedText]:
        return [GeneratedText(self._describe_one(item)) for item in items]

    def _describe_one(self, item: SourceItem) -> str:
        if not item.concepts:
            raise ValueError(f"item {item.item_id}: the shapes describer needs concepts, got none")
        rng = random.Random(item.seed ^ 0x5EED)
        phrases = [object_phrase(c) for c in item.concepts]
        clauses, i = [], 0
        while i < len(phrases):
            if i + 1 < len(phrases) and rng.random() < self.relation_probability:
                template = rng.choice(_PAIR_TEMPLATES)
                clauses.append(template.format(a=phrases[i], rel=rng.choice(RELATIONS), b=phrases[i + 1]))
                i += 2
            else:
                clauses.append(phrases[i])
                i += 1
        scene = rng.choice(_SCENE_TEMPLATES)
        joined = _join(clauses)
        return scene.format(clauses=joined, Clauses=joined[0].upper() + joined[1:])


@dataclass
class _Placed:
    colour: str
    shape: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the shape's bounding square


def _satisfies(a: _Placed, relation: str, b: _Placed) -> bool:
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.box, b.box
    acx, acy, bcx, bcy = (ax0 + ax1) / 2, (ay0 + ay1) / 2, (bx0 + bx1) / 2, (by0 + by1) / 2
    if relation == "to the left of":
        return acx < bx0 and ax1 <= bcx
    if relation == "to the right of":
        return bcx < ax0 and bx1 <= acx
    if relation == "above":
        return acy < by0 and ay1 <= bcy
    return bcy < ay0 and by1 <= acy  # below


def _overlaps(a: _Placed, b: _Placed) -> bool:
    """Objects may touch but not overlap; objects of one colour keep a gap so they stay separable."""
    gap = 2 if a.colour == b.colour else 0
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.box, b.box
    return ax0 < bx1 + gap and bx0 < ax1 + gap and ay0 < by1 + gap and by0 < ay1 + gap


def _polygon(shape: str, box: tuple[int, int, int, int]) -> list[tuple[float, float]] | None:
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
    if shape == "triangle":
        return [(x0, y1 - 1), (x1 - 1, y1 - 1), (xm, y0)]
    if shape == "diamond":
        return [(xm, y0), (x1 - 1, ym), (xm, y1 - 1), (x0, ym)]
    return None


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon(_polygon(shape, box), fill=fill)


class ShapesImageGenerator(ImageGenerator):
    """Renders a description: every named object, sizes and positions random, relations respected."""

    def __init__(self, size: int = 128, min_fraction: float = 0.15, max_fraction: float = 0.32):
        if size < 32:
            raise ValueError(f"size must be at least 32 pixels but is {size}")
        self.size, self.min_fraction, self.max_fraction = size, min_fraction, max_fraction
        self.info = AdapterInfo("shapes", VERSION, settings={"size": size, "min_fraction": min_fraction,
                                                             "max_fraction": max_fraction})

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[GeneratedImage]:
        return [self.render(prompt, seed) for prompt, seed in zip(prompts, seeds, strict=True)]

    def render(self, prompt: str, seed: int) -> GeneratedImage:
        objects = parse_objects(prompt)
        if not objects:
            raise ValueError(f"the shapes generator found no '<colour> <shape>' object in {prompt!r}")
        rng = random.Random(seed)
        placed = self._layout(objects, parse_relations(prompt), rng)
        noise = np.random.default_rng(seed).integers(-10, 11, size=(self.size, self.size, 1))
        background = np.clip(228 + noise, 0, 255).repeat(3, axis=2).astype(np.uint8)
        image = Image.fromarray(background)
        draw = ImageDraw.Draw(image)
        truth = []
        for obj in placed:
            _draw(draw, obj.shape, obj.box, COLOURS[obj.colour])
            mask = Image.new("1", (self.size, self.size))
            _draw(ImageDraw.Draw(mask), obj.shape, obj.box, 1)
            x0, y0, x1, y1 = mask.getbbox()
            truth.append((object_phrase(f"{obj.colour} {obj.shape}"), (float(x0), float(y0), float(x1), float(y1))))
        return GeneratedImage(image=image, ground_truth=truth)

    def _layout(self, objects, relations, rng: random.Random, restarts: int = 200) -> list[_Placed]:
        lo, hi = int(self.size * self.min_fraction), int(self.size * self.max_fraction)
        for attempt in range(restarts):
            # The last restarts drop the relations rather than fail: a crowded scene still renders.
            use_relations = relations if attempt < restarts - 20 else []
            placed: list[_Placed] = []
            for colour, shape in objects:
                for _ in range(100):
                    side = rng.randint(lo, hi)
                    x0, y0 = rng.randint(0, self.size - side), rng.randint(0, self.size - side)
                    candidate = _Placed(colour, shape, (x0, y0, x0 + side, y0 + side))
                    if not any(_overlaps(candidate, other) for other in placed):
                        placed.append(candidate)
                        break
                else:
                    break
            if len(placed) == len(objects) and all(
                _satisfies(self._find(placed, a), rel, self._find(placed, b)) for a, rel, b in use_relations
            ):
                return placed
        raise ValueError(f"cannot lay out {len(objects)} objects in {self.size}x{self.size} pixels")

    @staticmethod
    def _find(placed: list[_Placed], obj: tuple[str, str]) -> _Placed:
        return next(p for p in placed if (p.colour, p.shape) == obj)


class ShapesPhraseExtractor(PhraseExtractor):
    """Reads '<a|an> <colour> <shape>' phrases from the description text."""

    def __init__(self):
        self.info = AdapterInfo("shapes", VERSION)

    def extract(self, descriptions: Sequence[str]) -> list[PhraseCandidates]:
        return [PhraseCandidates(tuple(object_phrase(f"{c} {s}") for c, s in parse_objects(text)))
                for text in descriptions]


def classify_shape(component: np.ndarray) -> str:
    """Shape of one object's boolean mask, cropped to its bounding box."""
    height, width = component.shape
    fill = component.sum() / (height * width)
    if fill > 0.92:
        return "square"
    if fill > 0.66:
        return "circle"
    widths = component.sum(axis=1)
    widest_row = float(np.argmax(widths[::-1]))  # from the bottom, so ties favour the lowest row
    return "triangle" if widest_row < 0.2 * height else "diamond"


class ShapesDetector(Detector):
    """Boxes each phrase's object from the pixels: colour mask, connected parts, shape test.

    `corrupt_fraction` > 0 turns it into a *corrupted detector* for the quality benchmark
    (`bench/quality.py`): that share of its boxes is made wrong, as a weak open-vocabulary detector
    would (confidently, score unchanged): half of the chosen boxes are swapped with another phrase's
    box of the same image, the others shifted off their object by at least their own size. Which
    boxes are corrupted is drawn from `corrupt_seed` and the image's pixels, so it does not depend
    on batching; both settings are in `info.settings`, hence in lineage.
    """

    def __init__(self, colour_tolerance: int = 40, min_area: int = 12, corrupt_fraction: float = 0.0,
                 corrupt_seed: int = 0):
        if not 0 <= corrupt_fraction <= 1:
            raise ValueError(f"corrupt_fraction must be between 0 and 1 but is {corrupt_fraction}")
        self.colour_tolerance, self.min_area = colour_tolerance, min_area
        self.corrupt_fraction, self.corrupt_seed = corrupt_fraction, corrupt_seed
        settings = {"colour_tolerance": colour_tolerance, "min_area": min_area}
        if corrupt_fraction:
            settings |= {"corrupt_fraction": corrupt_fraction, "corrupt_seed": corrupt_seed}
        self.info = AdapterInfo("shapes", VERSION, settings=settings)

    def detect(self, images, phrases) -> list[list[Detection]]:
        found = [self._detect_one(image, item_phrases) for image, item_phrases in zip(images, phrases, strict=True)]
        if self.corrupt_fraction:
            found = [self._corrupt(image, detections) for image, detections in zip(images, found)]
        return found

    def _detect_one(self, image: Image.Image, phrases: Sequence[str]) -> list[Detection]:
        pixels = np.asarray(image.convert("RGB")).astype(np.int16)
        detections = []
        for index, phrase in enumerate(phrases):
            objects = parse_objects(phrase)
            if len(objects) != 1:
                continue  # not a '<colour> <shape>' phrase: nothing this detector can look for
            colour, shape = objects[0]
            distance = np.abs(pixels - np.array(COLOURS[colour], dtype=np.int16)).max(axis=2)
            labels, count = ndimage.label(distance <= self.colour_tolerance)
            for part, region in enumerate(ndimage.find_objects(labels), start=1):
                component = labels[region] == part
                if component.sum() < self.min_area or classify_shape(component) != shape:
                    continue
                ys, xs = region
                box = (float(xs.start), float(ys.start), float(xs.stop), float(ys.stop))
                detections.append(Detection(index, box, 1.0))
                break
        return detections

    def _corrupt(self, image: Image.Image, detections: list[Detection]) -> list[Detection]:
        digest = hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).digest()
        rng = random.Random(f"{self.corrupt_seed}:{digest.hex()}")
        boxes = [d.box_xyxy for d in detections]
        chosen = [i for i in range(len(detections)) if rng.random() < self.corrupt_fraction]
        for i in chosen:
            others = [j for j in range(len(detections)) if j != i]
            if others and rng.random() < 0.5:
                j = rng.choice(others)
                boxes[i], boxes[j] = boxes[j], boxes[i]
            else:
                boxes[i] = _shifted(boxes[i], image.size, rng)
        return [Detection(d.phrase_index, box, d.score) for d, box in zip(detections, boxes)]


def _shifted(box, size: tuple[int, int], rng: random.Random) -> tuple[float, float, float, float]:
    """The box moved by at least its own width or height (so it leaves its object), kept inside the image."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    candidates = [(nx, ny) for nx in range(0, int(size[0] - width) + 1) for ny in range(0, int(size[1] - height) + 1)
                  if abs(nx - x0) >= width or abs(ny - y0) >= height]
    if not candidates:
        return box
    nx, ny = rng.choice(candidates)
    return (float(nx), float(ny), float(nx + width), float(ny + height))
