"""Generated-text checks and image checks (degenerate pixels, perceptual-hash near-duplicates)."""

import numpy as np
import pytest
from PIL import Image

from synground_assets.quality.images import degenerate_reason, find_near_duplicates, perceptual_hash
from synground_assets.quality.text import find_duplicate_texts, text_problem
from synground_assets.roles.base import GeneratedText
from synground_assets.tiny.shapes import ShapesImageGenerator


@pytest.mark.parametrize("text, problem", [
    (GeneratedText(""), "empty_output"),
    (GeneratedText("   "), "empty_output"),
    (None, "empty_output"),
    (GeneratedText("I'm sorry, but I can't help with that."), "refusal"),
    (GeneratedText("As an AI language model, I cannot see images."), "refusal"),
    (GeneratedText("A brown dog leaps across a sunny park to catch a red fris", True), "truncated_output"),
])
def test_unusable_outputs_are_named(text, problem):
    assert text_problem(text)[0] == problem


@pytest.mark.parametrize("text", [
    GeneratedText("A brown dog leaps across a sunny park."),
    GeneratedText("A brown dog leaps across a sunny park.", True),  # at the limit, but the sentence ended
    GeneratedText("A brown dog leaps across a sunny park", False),  # stopped by itself: not cut off
    GeneratedText("A sign says I cannot stop here."),  # a refusal only at the start counts
])
def test_usable_outputs_pass(text):
    assert text_problem(text) is None


def test_duplicate_descriptions_ignore_case_spacing_and_punctuation_and_keep_the_first():
    earlier = [("s0:0", "A red circle.")]
    new = [("s1:0", "a  red circle"), ("s1:1", "A blue square."), ("s1:2", "a blue square!")]
    assert find_duplicate_texts(new, earlier) == {"s1:0": "s0:0", "s1:2": "s1:1"}


def shapes_image(seed: int) -> Image.Image:
    return ShapesImageGenerator(128).render("a red circle to the left of a blue square", seed).image


def test_constant_images_are_degenerate_and_rendered_ones_are_not():
    black = Image.new("RGB", (64, 64))
    assert "near-constant pixels" in degenerate_reason(black, 2.0)
    grey = Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)
                           + np.random.default_rng(0).integers(0, 2, (64, 64, 3)).astype(np.uint8))
    assert degenerate_reason(grey, 2.0) is not None
    assert degenerate_reason(shapes_image(0), 2.0) is None


def test_near_duplicates_by_perceptual_hash_keep_the_earliest():
    original = shapes_image(1)
    brighter = Image.eval(original, lambda v: min(255, v + 6))  # the same picture, re-encoded lighter
    other = shapes_image(2)
    hashes = [("s1:0", perceptual_hash(brighter)), ("s1:1", perceptual_hash(other)), ("s1:2", perceptual_hash(other))]
    found = find_near_duplicates(hashes, [("s0:5", perceptual_hash(original))], max_distance=4)
    assert set(found) == {"s1:0", "s1:2"}
    assert found["s1:0"][0] == "s0:5" and found["s1:2"] == ("s1:1", 0)
    assert find_near_duplicates(hashes[:2], [], max_distance=4) == {}
