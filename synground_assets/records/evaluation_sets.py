"""Evaluation sets for the pointing game, from the files users hold (or, for `shapes_test`, made here).

- `refcoco+_testA`, `refcoco+_testB`: the refer toolkit's `refs(unc).p` + `instances.json` under
  `root`, COCO train2014 images under `images` (default `<root>/images/train2014`).
- `flickr30k_test`: Flickr30k Entities' `Sentences/`, `Annotations/`, `test.txt` under `root`,
  images under `images` (default `<root>/flickr30k-images`).
- `shapes_test`: held-out shapes items with seeds of their own, boxed by the renderer's ground truth.

Roots come from the recipe file's `benchmarks:` section (or `SYNGROUND_BENCHMARKS_ROOT/<name>`):

    benchmarks:
      refcoco+_testA: {root: /data/refcoco+, images: /data/coco/train2014, resolution: 384}
      flickr30k_test: {root: /data/flickr30k_entities, resolution: 256, protocol: amc}

`protocol` (grounding/pointing_game.py): `amc`, AMC's released evaluation, is the default of the
paper's benchmarks; `pixel-centre`, the project's own, that of `shapes_test`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from synground_assets.config import settings as environment
from synground_assets.grounding.data import Triplet
from synground_assets.grounding.pointing_game import PROTOCOLS, PointingProtocol, pointing_protocol
from synground_assets.records.items import item_id, item_seed

BENCHMARKS = ("flickr30k_test", "refcoco+_testA", "refcoco+_testB", "shapes_test")
# AMC's evaluation resolutions: RefCOCO+ at 384 px (24x24 map), Flickr30k at 256 px (16x16).
DEFAULT_RESOLUTION = {"refcoco+_testA": 384, "refcoco+_testB": 384, "flickr30k_test": 256, "shapes_test": None}
DEFAULT_PROTOCOL = {"refcoco+_testA": "amc", "refcoco+_testB": "amc", "flickr30k_test": "amc",
                    "shapes_test": "pixel-centre"}
SHAPES_TEST_ITEMS = 512


class BenchmarkMissing(FileNotFoundError):
    """The benchmark's files are not on this machine: reported as absent, never scored as zero."""


@dataclass
class Benchmark:
    name: str
    triplets: list[Triplet]
    resolution: int | None  # None: the model's own input size
    source: str  # where the queries came from
    skipped: dict[str, int]  # reason -> count of queries the reader skipped (standard practice)
    protocol: PointingProtocol  # how maps become points and points hits


def benchmark_protocol(name: str, protocol: str) -> PointingProtocol:
    """AMC reads Flickr30k boxes with the toolkit's inclusive corners; RefCOCO+ and ours exclusive."""
    return pointing_protocol(protocol, last_corner_inclusive=name.startswith("flickr30k"))


def benchmark_settings(name: str, configured: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
    settings = dict(configured.get(name) or {})
    unknown = set(settings) - {"root", "images", "resolution", "max_queries", "protocol"}
    if unknown:
        raise ValueError(f"benchmarks.{name}: unknown field(s) {', '.join(sorted(unknown))}; "
                         "expected root, images, resolution, max_queries, protocol")
    settings.setdefault("protocol", DEFAULT_PROTOCOL[name])
    if settings["protocol"] not in PROTOCOLS:
        raise ValueError(f"benchmarks.{name}.protocol: expected one of {', '.join(PROTOCOLS)}, "
                         f"got {settings['protocol']!r}")
    if "root" not in settings and environment.benchmarks_root():
        settings["root"] = str(Path(environment.benchmarks_root()) / name.split("_")[0])
    settings.setdefault("resolution", DEFAULT_RESOLUTION[name])
    return settings


def load_benchmark(name: str, configured: dict[str, dict[str, Any]]) -> Benchmark:
    settings = benchmark_settings(name, configured)
    if name == "shapes_test":
        triplets = shapes_test_triplets(int(settings.get("max_queries") or SHAPES_TEST_ITEMS))
        return Benchmark(name, triplets, settings["resolution"], "shapes world, held-out seeds", {},
                         benchmark_protocol(name, settings["protocol"]))
    root = settings.get("root")
    if not root or not Path(root).is_dir():
        raise BenchmarkMissing(
            f"benchmark {name}: dataset folder {root or '(not configured)'} is absent; set benchmarks.{name}.root "
            "in the recipe file (or SYNGROUND_BENCHMARKS_ROOT) to the folder holding its official files"
        )
    read = _read_refcoco if name.startswith("refcoco") else _read_flickr
    result, source = read(name, Path(root), settings.get("images"))
    triplets = [Triplet(q.image_path, q.phrase, list(q.boxes_xyxy), q.query_id) for q in result.queries]
    if settings.get("max_queries"):
        triplets = triplets[: int(settings["max_queries"])]
    return Benchmark(name, triplets, settings["resolution"], source, result.skipped_by_reason(),
                     benchmark_protocol(name, settings["protocol"]))


def _read_refcoco(name: str, root: Path, images: str | None):
    from synground_assets.datasets.refcoco import read_refcoco

    split = name.split("_")[1]
    images_dir = Path(images) if images else root / "images" / "train2014"
    return read_refcoco(root, images_dir, split), f"{root} ({split})"


def _read_flickr(name: str, root: Path, images: str | None):
    from synground_assets.datasets.flickr30k import read_flickr30k_entities

    return read_flickr30k_entities(root, "test", Path(images) if images else None), f"{root} (test)"


def shapes_triplets(item_ids: Sequence[str], seeds: Sequence[int], size: int = 128,
                    oracle_boxes: bool = True) -> list[Triplet]:
    """One triplet per phrase of each shapes image: the renderer's true boxes (evaluation), or the
    detector's boxes on the extracted phrases (training data, as the pipeline makes it)."""
    from synground_assets.tiny.shapes import (
        ShapesConceptSampler,
        ShapesDescriber,
        ShapesDetector,
        ShapesImageGenerator,
        ShapesPhraseExtractor,
    )

    items = ShapesConceptSampler().sample(item_ids, seeds)
    descriptions = [d.text for d in ShapesDescriber().describe(items)]
    generator, extractor, detector = ShapesImageGenerator(size), ShapesPhraseExtractor(), ShapesDetector()
    triplets = []
    for item, description in zip(items, descriptions):
        rendered = generator.render(description, item.seed)
        if oracle_boxes:
            pairs = rendered.ground_truth
        else:
            phrases = extractor.extract([description])[0].phrases
            pairs = [(phrases[d.phrase_index], d.box_xyxy) for d in detector.detect([rendered.image], [phrases])[0]]
        triplets += [Triplet(rendered.image, phrase, [box], item.item_id) for phrase, box in pairs]
    return triplets


def shapes_test_triplets(count: int = SHAPES_TEST_ITEMS) -> list[Triplet]:
    """`count` held-out shapes queries: seeds from a recipe name no dataset uses, true boxes."""
    indices = range(count)  # at least one query per image, so `count` images are enough
    ids = [item_id("shapes_test", i // 64, i % 64) for i in indices]
    seeds = [item_seed("shapes_test", i // 64, i % 64) for i in indices]
    return shapes_triplets(ids, seeds)[:count]
