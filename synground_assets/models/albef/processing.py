"""ALBEF's inputs, as the official code makes them.

- Text: `pre_caption` (ALBEF / AMC dataset/utils.py), then bert-base-uncased WordPiece through
  transformers' `BertTokenizer` built from a vocab file; a single sequence is `[CLS] tokens` with
  NO trailing [SEP] (the repos' own tokenization_bert.py), padded to the longest of the batch with
  id 0. Evaluation does not truncate; training truncates to `max_text_tokens` ([CLS] counted).
- Images: PIL bicubic resize to a square, ToTensor (/255), CLIP's mean and std.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import BertTokenizer

VOCAB_FILE = "vocab.txt"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_PUNCTUATION = re.compile(r"([,.'!?\"()*#:;~])")
_WHITESPACE_RUN = re.compile(r"\s{2,}")


def pre_caption(caption: str, max_words: int = 30) -> str:
    """Lower-case; delete ,.'!?"()*#:; and ~; '-' and '/' become spaces; '<person>' becomes 'person';
    runs of two or more whitespace characters become one space; strip; keep the first max_words
    words (split on single spaces, as the original)."""
    caption = _PUNCTUATION.sub("", caption.lower()).replace("-", " ").replace("/", " ").replace("<person>", "person")
    caption = _WHITESPACE_RUN.sub(" ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


class AlbefTokenizer:
    """WordPiece ids as ALBEF feeds them: `[CLS] tokens`, no [SEP], padded with id 0."""

    def __init__(self, vocab_file: str | os.PathLike, pad_token_id: int = 0):
        self.vocab_file = Path(vocab_file)
        self.tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True)
        self.cls_token_id = self.tokenizer.cls_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id != pad_token_id:
            raise ValueError(f"{vocab_file}: [PAD] has id {self.pad_token_id} but the model pads with {pad_token_id}")
        if "[CLS]" not in self.tokenizer.get_vocab():
            raise ValueError(f"{vocab_file} has no [CLS] token; is it a BERT vocab.txt?")

    def __len__(self) -> int:
        return len(self.tokenizer.get_vocab())

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """[CLS] + WordPiece ids; with `max_tokens`, at most that many ids in all ([CLS] included)."""
        ids = [self.cls_token_id, *self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(text))]
        return ids[:max_tokens] if max_tokens is not None else ids

    def __call__(self, texts: Sequence[str], max_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), both (B, T) with T the longest sequence of the batch."""
        encoded = [self.encode(text, max_tokens) for text in texts]
        longest = max((len(ids) for ids in encoded), default=1)
        input_ids = torch.full((len(encoded), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), longest), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    def save(self, folder: str | os.PathLike) -> None:
        """vocab.txt: one token per line, in id order."""
        vocab = self.tokenizer.get_vocab()
        (Path(folder) / VOCAB_FILE).write_text("".join(f"{token}\n" for token in sorted(vocab, key=vocab.get)))


def image_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """(3, size, size): bicubic square resize, ToTensor, CLIP normalisation."""
    resized = image.convert("RGB").resize((size, size), Image.BICUBIC)
    pixels = torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (pixels - mean) / std


def images_to_tensor(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    return torch.stack([image_to_tensor(image, size) for image in images])  # (B, 3, size, size)
