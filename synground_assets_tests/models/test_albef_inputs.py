"""ALBEF's text and image inputs follow the official code: pre_caption, [CLS] without [SEP], pad 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from synground_assets.models.albef.processing import CLIP_MEAN, CLIP_STD, image_to_tensor, pre_caption


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("A Man's (red) hat!", "a mans red hat"),
        ('He said: "stop." ~ #1; *really*?', "he said stop 1 really"),
        ("blue-green/teal car", "blue green teal car"),
        ("<person> holding a cup", "person holding a cup"),
        ("  two   spaces\t\there  ", "two spaces here"),
        ("one\ttab stays", "one\ttab stays"),  # only runs of two or more whitespace collapse
        ("trailing newline\n", "trailing newline"),
        ("", ""),
        ("...!?", ""),
    ],
)
def test_pre_caption(caption, expected):
    assert pre_caption(caption) == expected


def test_pre_caption_keeps_the_first_max_words():
    words = " ".join(f"w{i}" for i in range(40))
    assert pre_caption(words) == " ".join(f"w{i}" for i in range(30))
    assert pre_caption(words, max_words=3) == "w0 w1 w2"


def test_tokens_are_cls_then_wordpieces_without_sep_padded_with_zero(tokenizer):
    vocab = tokenizer.tokenizer.get_vocab()
    ids, mask = tokenizer(["red circle", "a big blue square", ""])
    assert ids.tolist() == [
        [vocab["[CLS]"], vocab["red"], vocab["circle"], 0, 0],
        [vocab["[CLS]"], vocab["a"], vocab["big"], vocab["blue"], vocab["square"]],
        [vocab["[CLS]"], 0, 0, 0, 0],
    ]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert vocab["[SEP]"] not in ids.tolist()[1]


def test_tokenizer_lowercases_and_marks_unknown_words(tokenizer):
    vocab = tokenizer.tokenizer.get_vocab()
    assert tokenizer.encode("RED Zebra") == [vocab["[CLS]"], vocab["red"], vocab["[UNK]"]]


def test_truncation_counts_the_cls_token(tokenizer):
    assert len(tokenizer.encode("a big blue square", max_tokens=3)) == 3
    assert len(tokenizer.encode("a big blue square")) == 5  # evaluation: no truncation


def test_a_vocab_whose_pad_is_not_zero_is_refused(tmp_path):
    from synground_assets.models.albef import AlbefTokenizer

    path = tmp_path / "vocab.txt"
    path.write_text("[UNK]\n[PAD]\n[CLS]\n[SEP]\n[MASK]\nred\n")
    with pytest.raises(ValueError, match=r"\[PAD\] has id 1"):
        AlbefTokenizer(path)


def test_image_is_resized_bicubic_and_normalised_with_clip_statistics():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    pixels = image_to_tensor(image, 16)
    resized = np.asarray(image.resize((16, 16), Image.BICUBIC), dtype=np.float32) / 255
    expected = ((torch.from_numpy(resized).permute(2, 0, 1) - torch.tensor(CLIP_MEAN)[:, None, None])
                / torch.tensor(CLIP_STD)[:, None, None])
    assert pixels.shape == (3, 16, 16)
    assert torch.allclose(pixels, expected, atol=1e-6)
