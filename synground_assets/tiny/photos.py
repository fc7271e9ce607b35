"""A few real photographs for the real-data samplers (`tiny:photos`), with COCO-captions-style
captions."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from PIL import Image

# Captions of the tiny photo set, COCO-captions style; keyed by the photo's file name.
PHOTO_CAPTIONS = {
    "grace_hopper.jpg": [
        "A woman in a dark naval uniform with medals poses for a portrait.",
        "An old photograph of a woman wearing a uniform and a white collar.",
    ],
    "china.jpg": [
        "A pagoda temple with red roofs among green trees.",
        "An old chinese building with a tiled roof under a blue sky.",
    ],
    "flower.jpg": [
        "A pink flower with yellow stamens in front of green leaves.",
        "A close up of a flower in bloom.",
    ],
}
PHOTO_SOURCES = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("sklearn.datasets", "images/china.jpg"),
    ("sklearn.datasets", "images/flower.jpg"),
)
PROCEDURAL_SCENES = (
    "a red circle to the left of a blue square",
    "a yellow triangle above a green diamond",
    "an orange square below a purple circle",
)


def build_photos(folder: Path) -> None:
    """A few real photographs that ship inside installed wheels (matplotlib, scikit-learn), shrunk,
    with COCO-captions-style `captions.json`; procedural scenes stand in for any that are absent."""
    from synground_assets.tiny.shapes import ShapesImageGenerator

    images, annotations = [], []

    def add(image: Image.Image, file_name: str, captions: list[str]) -> None:
        image = image.convert("RGB")
        image.thumbnail((128, 128))
        image.save(folder / file_name, quality=90)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": image.width, "height": image.height})
        first_id = len(annotations) + 1
        annotations.extend({"id": first_id + i, "image_id": image_id, "caption": c} for i, c in enumerate(captions))

    for package, relative in PHOTO_SOURCES:
        try:
            path = resources.files(package) / relative
            with path.open("rb") as handle:
                photo = Image.open(handle)
                photo.load()
        except (ModuleNotFoundError, FileNotFoundError, OSError):
            continue
        add(photo, Path(relative).name, PHOTO_CAPTIONS[Path(relative).name])
    if not images:
        renderer = ShapesImageGenerator(size=96)
        for index, scene in enumerate(PROCEDURAL_SCENES):
            add(renderer.render(scene, seed=index).image, f"scene_{index}.jpg", [scene.capitalize() + "."])
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}, indent=1))


BUILDERS = {"photos": build_photos}
