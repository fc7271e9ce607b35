"""The glip detector adapter on the tiny random GLIP: the demo's inputs, boxes in pixels of the
given image, batching that changes no result, the demo's strict threshold and load errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from synground_assets.adapters.build import build_role
from synground_assets.adapters.glip_detect import GlipDetector
from synground_assets.adapters.loading import ModelLoadError
from synground_assets.models.glip.processing import GlipProcessor, boxes_to_original

# Two padded sizes at min_size 64 ((80, 64) -> 64 x 96; (64, 96) -> 96 x 64), an image without phrases.
SIZES = [(80, 64), (64, 96), (80, 64), (64, 64), (80, 64)]  # (width, height)
PHRASES = [["a cat", "a red couch"], ["a dog"], [], ["a dog", "the big stuffed teddy bear", "a car"], ["a kite"]]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


@pytest.fixture(scope="module")
def detector(cpu_spec):
    detector = GlipDetector(cpu_spec("glip", "tiny:glip", batch_size=4, box_threshold=0.0, top_k=2, min_size=64))
    yield detector
    detector.release()


def same(a, b):
    return len(a) == len(b) and all(
        x.phrase_index == y.phrase_index and np.allclose(x.box_xyxy, y.box_xyxy, atol=1e-3)
        and abs(x.score - y.score) < 1e-5 for x, y in zip(a, b))


def test_batched_equals_one_by_one(detector, images):
    batched = detector.detect(images, PHRASES)
    one_by_one = [detector.detect([image], [phrases])[0] for image, phrases in zip(images, PHRASES)]
    assert all(same(a, b) for a, b in zip(batched, one_by_one))
    assert batched[2] == [] and all(batched[i] for i in (0, 1, 3, 4))


def test_images_are_batched_only_with_images_of_their_padded_size(detector, images):
    batches = detector.batches(images, PHRASES)
    assert batches == [[(0, 0), (4, 0)], [(1, 0)], [(3, 0)]]
    small = GlipDetector(detector.spec.__class__(**{**vars(detector.spec), "batch_size": 1}))
    assert small.batches(images, PHRASES) == [[(0, 0)], [(4, 0)], [(1, 0)], [(3, 0)]]


def test_detections_are_the_models_boxes_in_pixels_of_the_given_image(detector, images):
    """What the adapter returns is model.detect's output scaled back (BoxList.resize), top_k per phrase."""
    processor = detector.processor
    inputs = processor(images[:1], PHRASES[:1])
    (output,) = detector.model.detect(inputs.pixel_values, inputs.image_sizes, inputs.input_ids,
                                      inputs.attention_mask, inputs.model_positive_maps())
    assert inputs.image_sizes == [(64, 80)] and inputs.original_sizes == [(64, 80)]
    detections = detector.detect(images[:1], PHRASES[:1])[0]
    boxes = boxes_to_original(output.boxes_xyxy, inputs.image_sizes[0], inputs.original_sizes[0])
    for phrase in range(2):
        mine = [d for d in detections if d.phrase_index == phrase]
        rows = (output.labels == phrase + 1).nonzero().flatten()
        best = rows[output.scores[rows].argsort(descending=True, stable=True)][:2]
        assert [d.score for d in mine] == pytest.approx(output.scores[best].tolist())
        assert np.allclose([d.box_xyxy for d in mine], boxes[best].numpy(), atol=1e-4)
    for d in detections:
        x0, y0, x1, y1 = d.box_xyxy
        assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 64


def test_boxes_scale_back_to_a_large_original(detector):
    """A 200 x 160 image is resized to 80 x 64 and back: boxes come back in the 200 x 160 frame."""
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 160, 3), dtype=np.uint8)).resize((200, 160))
    inputs = detector.processor([image], [["a cat"]])
    assert inputs.image_sizes == [(64, 80)] and inputs.original_sizes == [(160, 200)]
    detections = detector.detect([image], [["a cat"]])[0]
    assert detections and all(0 <= d.box_xyxy[0] < d.box_xyxy[2] <= 200 for d in detections)
    (output,) = detector.model.detect(inputs.pixel_values, inputs.image_sizes, inputs.input_ids,
                                      inputs.attention_mask, inputs.model_positive_maps())
    best = output.scores.argmax()
    assert np.allclose(detections[0].box_xyxy, (output.boxes_xyxy[best] * 2.5).tolist(), atol=1e-3)


def test_the_threshold_is_strict_and_top_k_bounds_each_phrase(cpu_spec, detector, images):
    loose = detector.detect(images, PHRASES)
    scores = sorted(d.score for item in loose for d in item)
    middle = scores[len(scores) // 2]
    strict = GlipDetector(cpu_spec("glip", "tiny:glip", box_threshold=middle, top_k=2, min_size=64))
    kept = strict.detect(images, PHRASES)
    assert all(d.score > middle for item in kept for d in item)  # score > threshold, as the demo
    assert sum(map(len, kept)) == sum(1 for item in loose for d in item if d.score > middle)
    one = GlipDetector(cpu_spec("glip", "tiny:glip", box_threshold=0.0, min_size=64)).detect(images, PHRASES)
    for item, phrases in zip(one, PHRASES):
        assert sorted(d.phrase_index for d in item) == list(range(len(phrases)))  # top_k 1 by default


def test_the_default_threshold_is_the_demos(cpu_spec):
    detector = build_role("detector", cpu_spec("glip", "tiny:glip"))
    assert detector.box_threshold == 0.5 and detector.top_k == 1 and detector.min_size == 800
    assert detector.info.settings["architecture"] == "glip"


def test_more_phrases_than_label_slots_run_as_several_captions(cpu_spec, images):
    detector = GlipDetector(cpu_spec("glip", "tiny:glip", box_threshold=0.0, min_size=64))
    slots = detector.max_phrases
    phrases = ["cat"] * slots + ["a red couch"]
    detections = detector.detect(images[:1], [phrases])[0]
    assert max(d.phrase_index for d in detections) == slots
    last = [d for d in detections if d.phrase_index == slots]
    alone = detector.detect(images[:1], [["a red couch"]])[0]
    assert len(last) == len(alone) == 1
    assert np.allclose(last[0].box_xyxy, alone[0].box_xyxy) and last[0].score == pytest.approx(alone[0].score)


def test_a_folder_that_is_not_glip_fails_naming_the_folder(cpu_spec, tiny_models):
    folder = tiny_models["owlv2"]
    with pytest.raises(ModelLoadError, match=f"cannot load GLIP model '{folder}' from folder '{folder}'.*convert"):
        GlipDetector(cpu_spec("glip", str(folder)))


def test_a_missing_folder_is_a_load_error(cpu_spec, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        GlipDetector(cpu_spec("glip", str(tmp_path / "models" / "glip-tiny")))


def test_options_are_checked_against_the_catalog(cpu_spec):
    with pytest.raises(ModelLoadError, match="option 'text_threshold': unknown option"):
        GlipDetector(cpu_spec("glip", "tiny:glip", text_threshold=0.25))
    with pytest.raises(ModelLoadError, match="option 'box_threshold': expected a number in \\[0, 1\\]"):
        GlipDetector(cpu_spec("glip", "tiny:glip", box_threshold=2))


def test_the_processor_reads_the_models_config(detector):
    assert isinstance(detector.processor, GlipProcessor)
    config = detector.model.config
    assert detector.processor.size_divisibility == config.size_divisibility == 32
    assert detector.processor.pixel_mean == tuple(config.pixel_mean)
    assert detector.model.training is False and next(detector.model.parameters()).dtype == torch.float32


def test_a_phrase_without_tokens_gets_no_box_and_the_others_still_do(detector, images):
    # '   ' has no token within its span's fallbacks: no box, as the official NaN score passes no threshold.
    detections = detector.detect(images[:2], [["   "], ["   ", "a dog"]])
    assert detections[0] == []
    assert {d.phrase_index for d in detections[1]} == {1}


def test_the_paper_recipes_box_with_glip_at_the_demos_settings():
    from synground_assets.config.recipes import load_recipe_book

    book = load_recipe_book()
    for name in ("paper-image2text", "paper-concept2text"):
        recipe = book.get(name)
        detector = recipe.roles["detector"]
        assert (detector.adapter, detector.model) == ("glip", "models/glip-tiny")
        assert detector.options == {"box_threshold": 0.5, "top_k": 1, "min_size": 800}
        assert "GLIP" in recipe.notes
    assert "GLIP-T" in book.get("paper-image2text").notes
    gdino = book.get("paper-image2text-gdino").roles["detector"]
    assert (gdino.adapter, gdino.model) == ("zero-shot-detector", "IDEA-Research/grounding-dino-base")
