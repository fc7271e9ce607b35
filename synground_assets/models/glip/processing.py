"""GLIP's inputs and outputs, as the official demo predictor makes them (microsoft/GLIP @ 9dda955,
`maskrcnn_benchmark/engine/predictor_glip.py`, below `predictor_glip.py`; `mb/` = `maskrcnn_benchmark/`).

- Image: the demo takes an OpenCV BGR uint8 array, `ToPILImage`, `Resize(min_image_size)` (shorter side
  to 800, longer side int-truncated, PIL bilinear, no max size), `ToTensor` (/255), x255 (`TO_BGR255`),
  `Normalize` with the Caffe BGR mean/std (predictor_glip.py:62-90); then zero padding, right/bottom, of
  the normalised tensor to a multiple of 32 (predictor_glip.py:180, mb/structures/image_list.py:29-68).
  Our images are RGB PIL images: the channels are reversed to BGR (resizing works per channel, so
  before or after the resize is the same).
- Text: a list of phrases becomes one caption `phrase + " . "` per phrase, the trailing separator
  kept, each phrase's character span [start, end) recorded (predictor_glip.py:183-196); the positive
  map comes from the caption's untruncated tokenization (predictor_glip.py:194, 219, 425-458) and labels
  are 1-based phrase indices (predictor_glip.py:221-226, 418-422); the model reads the caption again
  tokenized to exactly 256 tokens (mb/modeling/detector/generalized_vl_rcnn.py:212-217).
- Boxes: from the resized image back to the original one by `BoxList.resize` (predictor_glip.py:240-242,
  mb/structures/bounding_box.py:110-146): x times W0/w, y times H0/h, no +-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

# configs/pretrain/glip_Swin_T_O365_GoldG.yaml:69-70 (glip_Swin_L.yaml:89-90 the same), BGR order.
PIXEL_MEAN = (103.530, 116.280, 123.675)
PIXEL_STD = (57.375, 57.120, 58.395)
# The official Colab demo builds GLIPDemo(cfg, min_image_size=800); GLIPDemo itself has no max size
# (predictor_glip.py:84). The dataset/test path's Resize(800, 1333) is available as `max_size`.
MIN_IMAGE_SIZE = 800
MAX_SIZE_TEST = 1333  # mb/config/defaults.py:60, used by the test-set transform only
SIZE_DIVISIBILITY = 32  # DATALOADER.SIZE_DIVISIBILITY, glip_Swin_T_O365_GoldG.yaml:80
MAX_QUERY_LEN = 256  # MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN, mb/config/defaults.py:255
SEPARATOR = " . "  # predictor_glip.py:187
# run_on_web_image(..., thresh=0.5) (predictor_glip.py:137) is what the demo's phrase grounding keeps:
# score > thresh, strictly (predictor_glip.py:272-287).
DEMO_THRESHOLD = 0.5


# --- images --------------------------------------------------------------------------------------


def resized_size(width: int, height: int, min_size: int = MIN_IMAGE_SIZE,
                 max_size: int | None = None) -> tuple[int, int]:
    """(width, height) after the demo's `T.Resize(min_size)`: the shorter side becomes min_size, the
    longer `int(min_size * long / short)`; an image whose shorter side is already min_size is kept.
    With `max_size` (the test-set transform, mb/data/transforms/transforms.py:93-115), min_size first
    drops to `int(round(max_size * short / long))` when the longer side would pass max_size."""
    size = min_size
    if max_size is not None:
        short, long = float(min(width, height)), float(max(width, height))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return width, height
    if width < height:
        return size, int(size * height / width)
    return int(size * width / height), size


def resize_image(image: Image.Image, min_size: int = MIN_IMAGE_SIZE, max_size: int | None = None) -> Image.Image:
    """The demo's resize: PIL bilinear (torchvision's Resize default on a PIL image)."""
    size = resized_size(image.width, image.height, min_size, max_size)
    return image if size == image.size else image.resize(size, Image.BILINEAR)


def image_to_tensor(image: Image.Image, pixel_mean: Sequence[float] = PIXEL_MEAN,
                    pixel_std: Sequence[float] = PIXEL_STD) -> torch.Tensor:
    """(3, h, w) float32: BGR, x255 and normalised as the demo (predictor_glip.py:72-88). ToTensor's
    /255 and the x255 are both done, as there, so the values are the official ones to the last bit."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    pixels = torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1).float().div(255).mul(255)  # BGR
    mean = torch.tensor(pixel_mean, dtype=torch.float32)[:, None, None]  # as T.Normalize: float32 tensors
    std = torch.tensor(pixel_std, dtype=torch.float32)[:, None, None]
    return pixels.sub(mean).div(std)


def pad_batch(tensors: Sequence[torch.Tensor],
              size_divisibility: int = SIZE_DIVISIBILITY) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(B, 3, H, W) zero-padded right/bottom to the batch's largest size rounded up to the
    divisibility, and each image's unpadded (h, w) (mb/structures/image_list.py:47-68)."""
    if not tensors:
        raise ValueError("pad_batch needs at least one image")
    height = max(t.shape[1] for t in tensors)
    width = max(t.shape[2] for t in tensors)
    if size_divisibility > 0:
        height = -(-height // size_divisibility) * size_divisibility
        width = -(-width // size_divisibility) * size_divisibility
    batch = tensors[0].new_zeros((len(tensors), 3, height, width))
    for row, tensor in zip(batch, tensors):
        row[:, :tensor.shape[1], :tensor.shape[2]].copy_(tensor)
    return batch, [(int(t.shape[1]), int(t.shape[2])) for t in tensors]


def padded_shape(width: int, height: int, min_size: int = MIN_IMAGE_SIZE, max_size: int | None = None,
                 size_divisibility: int = SIZE_DIVISIBILITY) -> tuple[int, int]:
    """(H, W) of an image alone in its batch: images sharing it batch together with the same result
    as one by one (padding, GroupNorm and the fusion's softmax over all positions all see it)."""
    w, h = resized_size(width, height, min_size, max_size)
    if size_divisibility > 0:
        w, h = -(-w // size_divisibility) * size_divisibility, -(-h // size_divisibility) * size_divisibility
    return h, w


def boxes_to_original(boxes: torch.Tensor, resized: tuple[int, int], original: tuple[int, int]) -> torch.Tensor:
    """`BoxList.resize` from the resized image (h, w) to the original (H0, W0)
    (mb/structures/bounding_box.py:118-146): one ratio when both agree, else x and y apart; no +-1."""
    ratio_width = float(original[1]) / float(resized[1])
    ratio_height = float(original[0]) / float(resized[0])
    if ratio_width == ratio_height:
        return boxes * ratio_width
    scale = boxes.new_tensor([ratio_width, ratio_height, ratio_width, ratio_height])
    return boxes * scale


# --- text ----------------------------------------------------------------------------------------


def caption_from_phrases(phrases: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The demo's caption for a list of names (predictor_glip.py:183-196): each phrase as given
    (no lower-casing: the tokenizer lower-cases) followed by " . ", the last separator kept, and
    each phrase's [start, end) characters: ['a cat', 'a couch'] -> ('a cat . a couch . ', [(0, 5), (8, 15)])."""
    caption, spans = "", []
    for phrase in phrases:
        spans.append((len(caption), len(caption) + len(phrase)))
        caption += phrase + SEPARATOR
    return caption, spans


def _char_to_token(encoding, char: int) -> int | None:
    try:
        return encoding.char_to_token(char)
    except Exception:  # the official fallbacks swallow any error the same way (predictor_glip.py:440-452)
        return None


def phrase_tokens(encoding, spans: Sequence[tuple[int, int]], columns: int = MAX_QUERY_LEN) -> list[list[int]]:
    """Token indices of each span, as `create_positive_map` (predictor_glip.py:425-458) marks them.

    `encoding`: the fast tokenizer's output for the one caption, untruncated and with its special
    tokens ([CLS] is token 0), as the demo tokenizes it (predictor_glip.py:194). The start token is
    that of char `start`, else `start+1`, else `start+2` (a span starting on a space); the end token
    that of `end-1`, else `end-2`, else `end-3`; a span with either still unknown gets no tokens.
    Tokens from start to end inclusive are marked in a 256-column map, so those at index 256 and
    beyond are lost (a phrase past the 256th token of a long caption gets none)."""
    tokens = []
    for start, end in spans:
        first = _char_to_token(encoding, start)
        last = _char_to_token(encoding, end - 1)
        if first is None:
            first = _char_to_token(encoding, start + 1)
            if first is None:
                first = _char_to_token(encoding, start + 2)
        if last is None:
            last = _char_to_token(encoding, end - 2)
            if last is None:
                last = _char_to_token(encoding, end - 3)
        if first is None or last is None:
            tokens.append([])
            continue
        # positive_map[j, beg:end + 1] on 256 columns: a Python slice clips at the map's width.
        tokens.append(list(range(first, min(last + 1, columns))))
    return tokens


def positive_map(encoding, spans: Sequence[tuple[int, int]], columns: int = MAX_QUERY_LEN) -> dict[int, list[int]]:
    """{1-based label: token indices} (predictor_glip.py:219-226 with `plus = 1` for VLDYHEAD, 418-422).
    A phrase without tokens keeps its label with an empty list, as the official map does; the
    model can never score it (`detect` gets only the labels that have tokens, `model_positive_map`)."""
    return {label: tokens for label, tokens in enumerate(phrase_tokens(encoding, spans, columns), start=1)}


def model_positive_map(labels_to_tokens: dict[int, list[int]]) -> dict[int, list[int]]:
    """The labels that have tokens. The official mean over an empty token list is NaN, which no
    threshold passes, so such a phrase never gets a box there either (mb/modeling/rpn/inference.py:665, 673)."""
    return {label: tokens for label, tokens in labels_to_tokens.items() if tokens}


def check_fast_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"GLIP needs a fast tokenizer (character offsets for the positive map), got "
                         f"{type(tokenizer).__name__}; load it with AutoTokenizer.from_pretrained(folder)")


# --- one batch -----------------------------------------------------------------------------------


@dataclass
class GlipInputs:
    """What `GlipForGrounding.detect` takes, and what maps its boxes back to the images as given."""

    pixel_values: torch.Tensor  # (B, 3, H, W) normalised BGR, zero-padded
    image_sizes: list[tuple[int, int]]  # (h, w) of each resized image, unpadded
    original_sizes: list[tuple[int, int]]  # (H0, W0) of each image as given
    input_ids: torch.Tensor  # (B, 256)
    attention_mask: torch.Tensor  # (B, 256)
    captions: list[str]
    spans: list[list[tuple[int, int]]]
    positive_maps: list[dict[int, list[int]]]  # 1-based label -> tokens, every phrase (empty lists kept)

    def model_positive_maps(self) -> list[dict[int, list[int]]]:
        return [model_positive_map(item) for item in self.positive_maps]


class GlipProcessor:
    """Images and phrase lists -> `GlipInputs`, and the model's boxes back to the images as given."""

    def __init__(self, tokenizer, min_size: int = MIN_IMAGE_SIZE, max_size: int | None = None,
                 size_divisibility: int = SIZE_DIVISIBILITY, max_query_len: int = MAX_QUERY_LEN,
                 pixel_mean: Sequence[float] = PIXEL_MEAN, pixel_std: Sequence[float] = PIXEL_STD):
        check_fast_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.min_size = min_size
        self.max_size = max_size
        self.size_divisibility = size_divisibility
        self.max_query_len = max_query_len
        self.pixel_mean = tuple(pixel_mean)
        self.pixel_std = tuple(pixel_std)

    @classmethod
    def from_config(cls, tokenizer, config, min_size: int = MIN_IMAGE_SIZE, max_size: int | None = None):
        """The processor of a model (its `GlipConfig`): padding, query length, mean and std from it."""
        return cls(tokenizer, min_size=min_size, max_size=max_size, size_divisibility=config.size_divisibility,
                   max_query_len=config.max_query_len, pixel_mean=config.pixel_mean, pixel_std=config.pixel_std)

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), (B, 256): max_length 256, padded to it, truncated, with
        [CLS]/[SEP] (generalized_vl_rcnn.py:212-217)."""
        encoded = self.tokenizer(list(captions), max_length=self.max_query_len, padding="max_length",
                                 truncation=True, return_tensors="pt")
        return encoded["input_ids"], encoded["attention_mask"]

    def phrase_map(self, caption: str, spans: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
        encoding = self.tokenizer([caption])  # untruncated, as predictor_glip.py:194
        return positive_map(encoding, spans, self.max_query_len)

    def padded_shape(self, image: Image.Image) -> tuple[int, int]:
        return padded_shape(image.width, image.height, self.min_size, self.max_size, self.size_divisibility)

    def __call__(self, images: Sequence[Image.Image], phrases: Sequence[Sequence[str]]) -> GlipInputs:
        if len(images) != len(phrases):
            raise ValueError(f"got {len(images)} images but {len(phrases)} phrase lists")
        tensors = [image_to_tensor(resize_image(image, self.min_size, self.max_size), self.pixel_mean, self.pixel_std)
                   for image in images]
        pixel_values, image_sizes = pad_batch(tensors, self.size_divisibility)
        captions, spans = [], []
        for item in phrases:
            caption, item_spans = caption_from_phrases(item)
            captions.append(caption)
            spans.append(item_spans)
        input_ids, attention_mask = self.tokenize(captions)
        return GlipInputs(
            pixel_values=pixel_values, image_sizes=image_sizes,
            original_sizes=[(image.height, image.width) for image in images],
            input_ids=input_ids, attention_mask=attention_mask, captions=captions, spans=spans,
            positive_maps=[self.phrase_map(caption, item_spans) for caption, item_spans in zip(captions, spans)],
        )
