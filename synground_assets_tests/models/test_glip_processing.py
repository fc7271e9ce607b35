"""GLIP's inputs as the official demo predictor makes them (models/glip/processing.py): the caption,
the positive map from character spans to tokens, the resize rule, BGR x255 normalisation, padding
and boxes back in the original image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from synground_assets.models.glip.processing import (
    PIXEL_MEAN,
    PIXEL_STD,
    GlipProcessor,
    boxes_to_original,
    caption_from_phrases,
    image_to_tensor,
    model_positive_map,
    pad_batch,
    padded_shape,
    positive_map,
    resize_image,
    resized_size,
)
from synground_assets.tiny.tokenizers import bert_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The tiny WordPiece tokenizer, saved and reloaded with AutoTokenizer as a model folder's is."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("glip-tokenizer")
    bert_tokenizer().save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tokens_of(tokenizer, caption: str) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenizer(caption)["input_ids"])


def labels(tokenizer, caption, spans):
    return positive_map(tokenizer([caption]), spans)


# --- caption ---------------------------------------------------------------------------------------


def test_the_caption_joins_phrases_with_space_dot_space_and_keeps_the_last_separator():
    caption, spans = caption_from_phrases(["a cat", "A Red couch"])
    assert caption == "a cat . A Red couch . "  # as given: the tokenizer lower-cases
    assert spans == [(0, 5), (8, 19)]
    assert [caption[s:e] for s, e in spans] == ["a cat", "A Red couch"]
    assert caption_from_phrases([]) == ("", [])


# --- positive map ----------------------------------------------------------------------------------


def test_each_phrase_maps_to_its_tokens_with_cls_at_index_0_and_1_based_labels(tokenizer):
    caption, spans = caption_from_phrases(["a cat", "a red couch"])
    assert tokens_of(tokenizer, caption) == ["[CLS]", "a", "cat", ".", "a", "red", "couch", ".", "[SEP]"]
    assert labels(tokenizer, caption, spans) == {1: [1, 2], 2: [4, 5, 6]}


def test_a_word_split_into_word_pieces_gives_the_phrase_every_piece(tokenizer):
    caption, spans = caption_from_phrases(["a zqx", "a cat"])
    tokens = tokens_of(tokenizer, caption)
    assert tokens[:6] == ["[CLS]", "a", "z", "##q", "##x", "."]  # 'zqx' is not a word of the vocabulary
    assert labels(tokenizer, caption, spans) == {1: [1, 2, 3, 4], 2: [6, 7]}


def test_a_span_starting_or_ending_on_spaces_falls_back_as_create_positive_map(tokenizer):
    caption = "a cat .   a couch . "  # 'a couch' starts at 10, after three spaces
    assert tokens_of(tokenizer, caption)[4:6] == ["a", "couch"]
    # One or two leading spaces: the start moves to char+1, then char+2.
    assert labels(tokenizer, caption, [(9, 17)]) == {1: [4, 5]}
    assert labels(tokenizer, caption, [(8, 17)]) == {1: [4, 5]}
    # Three leading spaces: no start token within start+2, the phrase gets no tokens.
    assert labels(tokenizer, caption, [(7, 17)]) == {1: []}
    # Trailing spaces: the end moves to end-2, then end-3 (a span ending with two spaces).
    assert labels(tokenizer, "a couch  . ", [(0, 8)]) == {1: [1, 2]}
    assert labels(tokenizer, "a couch  . ", [(0, 9)]) == {1: [1, 2]}
    assert labels(tokenizer, "a couch   . ", [(0, 10)]) == {1: []}


def test_tokens_past_256_are_lost_as_in_the_256_column_map(tokenizer):
    # [CLS], 'a cat .' (3 tokens), then 'a red red cat .' (5 tokens) from token 4: phrase n >= 2 starts
    # at 4 + 5 (n - 2), so phrase 52 holds tokens 254-257 and phrase 53 starts at 259.
    phrases = ["a cat"] + ["a red red cat"] * 60
    caption, spans = caption_from_phrases(phrases)
    encoding = tokenizer([caption])
    assert tokens_of(tokenizer, caption)[4:9] == ["a", "red", "red", "cat", "."]
    assert len(encoding["input_ids"][0]) == 1 + 3 + 5 * 60 + 1
    tokens = positive_map(encoding, spans)
    assert tokens[1] == [1, 2] and tokens[2] == [4, 5, 6, 7] and tokens[51] == [249, 250, 251, 252]
    assert tokens[52] == [254, 255]  # cut at the map's 256 columns
    assert all(tokens[label] == [] for label in range(53, 62))
    assert model_positive_map(tokens) == {label: tokens[label] for label in range(1, 53)}


def test_the_model_reads_the_caption_padded_and_truncated_to_256(tokenizer):
    processor = GlipProcessor(tokenizer)
    long_caption, _ = caption_from_phrases([f"a cat {n}" for n in range(70)])
    ids, mask = processor.tokenize(["a cat . ", long_caption])
    assert ids.shape == mask.shape == (2, 256)
    assert mask[0].sum() == 5 and ids[0, 4] == tokenizer.sep_token_id and (ids[0, 5:] == tokenizer.pad_token_id).all()
    assert mask[1].all() and ids[1, 255] == tokenizer.sep_token_id and ids[1, 0] == tokenizer.cls_token_id


def test_a_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="needs a fast tokenizer"):
        GlipProcessor(Slow())


# --- images ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, expected", [
    ((640, 480), (1066, 800)),  # int(800 * 640 / 480) = 1066
    ((480, 640), (800, 1066)),
    ((333, 500), (800, 1201)),  # int(1201.2)
    ((800, 1200), (800, 1200)),  # shorter side already 800: unchanged
    ((64, 64), (800, 800)),
    ((4000, 100), (32000, 800)),  # the demo has no max size
])
def test_the_demo_resizes_the_shorter_side_to_800_with_no_max_size(size, expected):
    assert resized_size(*size) == expected


def test_the_test_set_rule_caps_the_longer_side_at_1333():
    assert resized_size(4000, 100, 800, 1333) == (1320, 33)  # size round(1333 / 40) = 33, then int(33 * 40)
    assert resized_size(640, 480, 800, 1333) == (1066, 800)  # under the cap: as the demo


def test_resize_is_pil_bilinear_to_that_size():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    resized = resize_image(image, 60)
    assert resized.size == (80, 60)
    assert np.array_equal(np.asarray(resized), np.asarray(image.resize((80, 60), Image.BILINEAR)))


def test_pixels_are_bgr_times_255_normalised_by_the_caffe_mean_and_std():
    image = Image.new("RGB", (3, 2), (10, 20, 30))
    tensor = image_to_tensor(image)
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    bgr = (30, 20, 10)
    for channel in range(3):
        expected = (bgr[channel] - PIXEL_MEAN[channel]) / PIXEL_STD[channel]
        assert torch.allclose(tensor[channel], torch.full((2, 3), expected), atol=1e-6)


def test_padding_is_zero_at_the_right_and_bottom_to_a_multiple_of_32():
    a, b = torch.ones(3, 40, 50), torch.full((3, 33, 70), 2.0)
    batch, sizes = pad_batch([a, b])
    assert batch.shape == (2, 3, 64, 96) and sizes == [(40, 50), (33, 70)]
    assert (batch[0, :, :40, :50] == 1).all()
    assert batch[0, :, 40:].abs().sum() == 0 and batch[0, :, :, 50:].abs().sum() == 0
    assert (batch[1, :, :33, :70] == 2).all() and batch[1, :, 33:].abs().sum() == 0
    assert padded_shape(640, 480) == (800, 1088)  # (1066, 800) padded


def test_the_processor_batches_images_and_captions():
    tokenizer = bert_tokenizer()
    processor = GlipProcessor(tokenizer, min_size=64)
    images = [Image.new("RGB", (80, 64), "red"), Image.new("RGB", (64, 96), "blue")]
    inputs = processor(images, [["a cat"], ["a dog", "a red couch"]])
    assert inputs.pixel_values.shape == (2, 3, 96, 96)
    assert inputs.image_sizes == [(64, 80), (96, 64)] and inputs.original_sizes == [(64, 80), (96, 64)]
    assert inputs.captions == ["a cat . ", "a dog . a red couch . "]
    assert inputs.positive_maps == [{1: [1, 2]}, {1: [1, 2], 2: [4, 5, 6]}]
    assert inputs.input_ids.shape == (2, 256)
    with pytest.raises(ValueError, match="2 images but 1 phrase lists"):
        processor(images, [["a cat"]])


# --- boxes -----------------------------------------------------------------------------------------


def test_boxes_go_back_to_the_original_image_without_plus_or_minus_one():
    boxes = torch.tensor([[0.0, 0.0, 1065.0, 799.0], [100.0, 200.0, 300.0, 400.0]])
    back = boxes_to_original(boxes, resized=(800, 1066), original=(480, 640))
    ratio_x, ratio_y = 640 / 1066, 480 / 800
    assert torch.allclose(back, boxes * torch.tensor([ratio_x, ratio_y, ratio_x, ratio_y]))
    same_ratio = boxes_to_original(boxes, resized=(800, 800), original=(400, 400))
    assert torch.equal(same_ratio, boxes * 0.5)
