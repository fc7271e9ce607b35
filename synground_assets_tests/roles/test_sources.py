"""Source samplers: seeded, reproducible, and clear about missing data."""

import json

import pytest

from synground_assets.roles.loading import ModelLoadError
from synground_assets.roles.sources import CaptionsSampler, ConceptVocabularySampler, ImageFolderSampler

IDS, SEEDS = [f"item-{i}" for i in range(20)], list(range(100, 120))


def test_concept_sampler_default_vocabulary_is_coco():
    sampler = ConceptVocabularySampler()
    assert len(sampler.concepts) == 80 and "teddy bear" in sampler.concepts
    items = sampler.sample(IDS, SEEDS)
    assert items == sampler.sample(IDS, SEEDS)
    assert all(1 <= len(item.concepts) <= 3 for item in items)
    assert len({item.concepts for item in items}) > 10


def test_concept_sampler_attributes(tmp_path):
    vocabulary = tmp_path / "v.txt"
    vocabulary.write_text("# objects\ncat\n\ndog\ncat\n")
    sampler = ConceptVocabularySampler(vocabulary=str(vocabulary), max_concepts=2, attribute_probability=1.0)
    assert sampler.concepts == ["cat", "dog"]
    for item in sampler.sample(IDS, SEEDS):
        assert all(c.split()[-1] in ("cat", "dog") and len(c.split()) == 2 for c in item.concepts)


def test_concept_sampler_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="vocabulary file '/no/file.txt' does not exist"):
        ConceptVocabularySampler(vocabulary="/no/file.txt")
    with pytest.raises(ModelLoadError, match="min_concepts <= max_concepts"):
        ConceptVocabularySampler(min_concepts=3, max_concepts=2)


def test_image_folder_sampler(tiny_models, tmp_path):
    sampler = ImageFolderSampler("tiny:photos")
    items = sampler.sample(IDS, SEEDS)
    assert items == sampler.sample(IDS, SEEDS)
    assert {item.source_image for item in items} <= set(sampler.paths)
    assert len({item.source_image for item in items}) > 1
    with pytest.raises(ModelLoadError, match="holds no images"):
        ImageFolderSampler(str(tmp_path))
    with pytest.raises(ModelLoadError, match="does not exist"):
        ImageFolderSampler(str(tmp_path / "missing"))


def test_image_list_in_coco_json(tiny_models, tmp_path):
    photos = tiny_models["photos"]
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"images": [{"id": 1, "file_name": "flower.jpg"}]}))
    sampler = ImageFolderSampler(str(listing), image_root=str(photos))
    assert sampler.paths == [str(photos / "flower.jpg")]


def test_captions_sampler_fills_image_and_captions(tiny_models):
    sampler = CaptionsSampler("tiny:photos/captions.json")
    items = sampler.sample(IDS, SEEDS)
    assert items == sampler.sample(IDS, SEEDS)
    for item in items:
        assert item.source_image and len(item.source_captions) >= 1


def test_captions_sampler_rejects_json_without_captions(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []}))
    with pytest.raises(ModelLoadError, match="has no image with a caption"):
        CaptionsSampler(str(path))
