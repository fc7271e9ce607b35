"""A tiny ALBEF (fixed seed) and its vocabulary, and official-layout checkpoints made from it."""

from __future__ import annotations

import pytest
import torch

from synground_assets.models.albef import AlbefConfig, AlbefModel, AlbefTokenizer
from synground_assets.tiny.grounding import shapes_vocabulary


def tiny_config(**overrides) -> AlbefConfig:
    sizes = dict(image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2,
                 vocab_size=len(shapes_vocabulary()), text_width=32, text_layers=4, text_heads=2,
                 intermediate_size=64, fusion_layer=2, gradcam_layer=2, max_position_embeddings=40, embed_dim=16)
    return AlbefConfig(**{**sizes, **overrides})


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("albef-vocab") / "vocab.txt"
    path.write_text("\n".join(shapes_vocabulary()) + "\n")
    return path


@pytest.fixture
def tokenizer(vocab_file) -> AlbefTokenizer:
    return AlbefTokenizer(vocab_file)


@pytest.fixture
def tiny_albef() -> AlbefModel:
    torch.manual_seed(0)
    return AlbefModel(tiny_config(initializer_range=0.1)).eval()
