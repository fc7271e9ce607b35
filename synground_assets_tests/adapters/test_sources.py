"""Source samplers: seeded, reproducible, and clear about missing data."""

import json

import pytest

from synground_assets.adapters.loading import ModelLoadError
from synground_assets.adapters.sources import CaptionsSampler, ConceptVocabularySampler, ImageFolderSampler

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


def image_folder(tmp_path, good: int, bad: int):
    """`good` decodable PNGs and `bad` unreadable ones (truncated, empty, not an image)."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(good):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"good-{i}.png")
    Image.effect_noise((64, 64), 50).save(tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    kinds = [whole[: len(whole) // 2], b"", b"not an image"]
    for i in range(bad):
        (folder / f"bad-{i}.png").write_bytes(kinds[i % len(kinds)])
    return folder


def test_unreadable_images_are_dropped_from_the_pool_once_and_recorded(tmp_path):
    """Issue 30 (minor): the image-folder sampler kept unreadable files in its pool (11 of 16 items
    skipped per shard downstream)."""
    sampler = ImageFolderSampler(str(image_folder(tmp_path, good=3, bad=9)))
    items = sampler.sample(IDS, SEEDS)
    chosen = {item.source_image for item in items}
    assert chosen and all("/good-" in path for path in chosen)
    dropped = sampler.take_dropped()
    assert len({path for _, path, _ in dropped}) == len(dropped)  # each file dropped once
    assert {path for _, path, _ in dropped} == set(sampler.unreadable) and dropped
    assert all(item in IDS for item, _, _ in dropped)
    # Checked once: the same draws again meet no new unreadable file, and give the same images.
    assert sampler.sample(IDS, SEEDS) == items and sampler.take_dropped() == []
    assert ImageFolderSampler(sampler.info.model_id).sample(IDS, SEEDS) == items  # reproducible in a new process


def test_a_folder_of_readable_images_draws_as_before(tmp_path):
    import random

    sampler = ImageFolderSampler(str(image_folder(tmp_path, good=5, bad=0)))
    assert [i.source_image for i in sampler.sample(IDS, SEEDS)] == [random.Random(s).choice(sampler.paths)
                                                                    for s in SEEDS]


def test_a_folder_of_unreadable_images_only_is_a_clear_error(tmp_path):
    sampler = ImageFolderSampler(str(image_folder(tmp_path, good=0, bad=3)))
    with pytest.raises(ModelLoadError, match="none of its 3 images can be read"):
        sampler.sample(IDS, SEEDS)
