"""Triplets, augmentations that keep the pair true, and box masks."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from synground_assets.grounding.data import Augmentation, Triplet, augment, box_mask, swap_left_right


def test_swap_left_right_keeps_case_and_leaves_other_words():
    assert swap_left_right("a cat to the left of a dog") == "a cat to the right of a dog"
    assert swap_left_right("Right of the leftover chair, left") == "Left of the leftover chair, right"


def test_flip_mirrors_image_boxes_and_text():
    image = Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 5))
    always = Augmentation(horizontal_flip=True, flip_probability=1.0, colour_jitter=False, grayscale=False)
    flipped, phrase, boxes = augment(image, "the red box on the left", [(0, 0, 10, 5)], random.Random(0), always)
    assert phrase == "the red box on the right"
    assert boxes == [(30, 0, 40, 5)]
    assert flipped.getpixel((35, 2)) == (255, 0, 0) and flipped.getpixel((5, 2)) == (255, 255, 255)


def test_flip_is_off_by_default_and_grayscale_makes_grey_pixels():
    image = Image.new("RGB", (8, 8), (200, 30, 30))
    grey = Augmentation(colour_jitter=False, grayscale=True, grayscale_probability=1.0)
    out, phrase, boxes = augment(image, "left", [(0, 0, 4, 4)], random.Random(0), grey)
    assert phrase == "left" and boxes == [(0, 0, 4, 4)]
    r, g, b = out.getpixel((0, 0))
    assert r == g == b


def test_box_mask_follows_the_pixel_centre_rule_and_scales():
    mask = box_mask([(2, 1, 5, 3)], image_size=(8, 4), mask_size=(4, 8))
    expected = torch.zeros(4, 8)
    expected[1:3, 2:5] = 1
    assert torch.equal(mask, expected)
    # The same box in an image twice as large, rasterised at the small size, gives half the box.
    assert torch.equal(box_mask([(4, 2, 10, 6)], (16, 8), (4, 8)), expected)
    union = box_mask([(0, 0, 1, 1), (7, 3, 8, 4)], (8, 4), (4, 8))
    assert union.sum() == 2 and union[0, 0] == 1 and union[3, 7] == 1


def test_triplet_rejects_bad_boxes():
    with pytest.raises(ValueError, match="no box"):
        Triplet(Image.new("RGB", (4, 4)), "a cat", [])
    with pytest.raises(ValueError, match="x1 > x0"):
        Triplet(Image.new("RGB", (4, 4)), "a cat", [(3, 0, 1, 2)])


def test_triplet_reads_an_image_from_disk(tmp_path):
    path = tmp_path / "one.png"
    Image.new("L", (6, 4)).save(path)
    triplet = Triplet(path, "a cat", [(0, 0, 2, 2)])
    assert triplet.load_image().mode == "RGB" and triplet.load_image().size == (6, 4)
    assert triplet.image_key == str(path)
