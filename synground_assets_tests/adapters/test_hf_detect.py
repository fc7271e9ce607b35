"""Open-vocabulary detectors on tiny random models: boxes in pixels of the given image."""

import numpy as np
import pytest
from PIL import Image

from synground_assets.adapters.hf_detect import ZeroShotDetector, caption_from_phrases

MODELS = ["tiny:grounding-dino", "tiny:mm-grounding-dino", "tiny:owlv2", "tiny:owlvit", "tiny:omdet-turbo"]
PHRASES = [["a cat", "a red couch"], [], ["a dog", "the big stuffed teddy bear", "a car"], ["a kite"]]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    sizes = [(80, 64), (64, 64), (80, 64), (80, 64)]  # (width, height)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module", params=MODELS)
def detector(request, cpu_spec):
    # Thresholds 0: random weights score low, and every (box, phrase) pair should reach selection.
    detector = ZeroShotDetector(cpu_spec("zero-shot-detector", request.param, batch_size=4, box_threshold=0.0,
                                         text_threshold=0.0, top_k=2))
    yield detector
    detector.release()


def same(a, b):
    return len(a) == len(b) and all(
        x.phrase_index == y.phrase_index and np.allclose(x.box_xyxy, y.box_xyxy, atol=1e-2)
        and abs(x.score - y.score) < 1e-4 for x, y in zip(a, b))


def test_batched_equals_one_by_one(detector, images):
    batched = detector.detect(images, PHRASES)
    one_by_one = [detector.detect([image], [phrases])[0] for image, phrases in zip(images, PHRASES)]
    assert all(same(a, b) for a, b in zip(batched, one_by_one))


def test_boxes_in_pixels_of_the_given_image(detector, images):
    results = detector.detect(images, PHRASES)
    assert any(results)
    for image, phrases, detections in zip(images, PHRASES, results):
        for d in detections:
            x0, y0, x1, y1 = d.box_xyxy
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
            assert 0 <= d.phrase_index < len(phrases) and 0 <= d.score <= 1


def test_top_k_boxes_per_phrase(detector, images):
    for detections in detector.detect(images, PHRASES):
        counts = np.bincount([d.phrase_index for d in detections], minlength=1)
        assert counts.max(initial=0) <= 2


def test_no_phrases_no_detections(detector, images):
    assert detector.detect(images[:2], [[], []]) == [[], []]
    assert detector.detect([], []) == []


@pytest.mark.parametrize("model", ["tiny:owlv2", "tiny:owlvit", "tiny:omdet-turbo"])
def test_threshold_one_keeps_nothing(cpu_spec, images, model):
    strict = ZeroShotDetector(cpu_spec("zero-shot-detector", model, box_threshold=1.0))
    assert strict.detect(images[:1], PHRASES[:1]) == [[]]


@pytest.mark.parametrize("model", ["tiny:owlv2", "tiny:omdet-turbo"])
def test_box_threshold_keeps_the_boxes_that_reach_it(cpu_spec, images, model):
    loose = ZeroShotDetector(cpu_spec("zero-shot-detector", model, box_threshold=0.0, top_k=2)).detect(images, PHRASES)
    scores = sorted(d.score for detections in loose for d in detections)
    threshold = scores[len(scores) // 2]  # the median: some boxes pass, some do not
    strict = ZeroShotDetector(cpu_spec("zero-shot-detector", model, box_threshold=threshold, top_k=2))
    kept = strict.detect(images, PHRASES)
    # The top_k best boxes of a phrase that reach the threshold are its top_k best boxes that do.
    assert all(same(a, [d for d in b if d.score >= threshold]) for a, b in zip(kept, loose))
    assert 0 < sum(map(len, kept)) < sum(map(len, loose))


def test_omdet_turbo_defaults_to_its_own_threshold(cpu_spec):
    detector = ZeroShotDetector(cpu_spec("zero-shot-detector", "tiny:omdet-turbo"))
    assert (detector.box_threshold, detector.top_k) == (0.3, 1)
    assert detector.info.settings["architecture"] == "omdet-turbo"


def test_default_is_one_box_per_phrase(cpu_spec, images):
    detector = ZeroShotDetector(cpu_spec("zero-shot-detector", "tiny:grounding-dino", box_threshold=0.0,
                                         text_threshold=0.0))
    assert detector.top_k == 1
    for detections in detector.detect(images, PHRASES):
        assert len({d.phrase_index for d in detections}) == len(detections)


def test_mismatched_inputs_are_named(detector, images):
    with pytest.raises(ValueError, match="got 2 images but 1 phrase lists"):
        detector.detect(images[:2], PHRASES[:1])


def test_caption_from_phrases():
    caption, spans = caption_from_phrases(["A cat", "a  red couch"])
    assert caption == "a cat . a red couch ."
    assert [caption[s:e] for s, e in spans] == ["a cat", "a red couch"]
