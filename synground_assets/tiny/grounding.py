"""Tiny grounding models of the shapes world: the random-init BLIP-ITM and ALBEF that the shapes
recipe fine-tunes, the tests and the benchmarks use (their adapters: `adapters/grounding_*.py`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForImageTextRetrieval,
    BlipImageProcessorPil,
    BlipProcessor,
)

from synground_assets.grounding.config import DEFAULT_MAX_TEXT_TOKENS
from synground_assets.models.albef import AlbefConfig, AlbefModel, AlbefTokenizer, save_pretrained
from synground_assets.tiny.shapes import COLOURS, RELATIONS, SHAPES

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_EXTRA_WORDS = (
    "a an the of with and on in is there this shows picture image photo simple drawing grey gray "
    "background sitting placed next near left right top bottom middle centre center small big large "
    "object shape . , -"
).split()


def shapes_vocabulary() -> list[str]:
    """Special tokens, then every word the shapes world writes (and a few general ones)."""
    words = [*COLOURS, *SHAPES, *(word for relation in RELATIONS for word in relation.split()), *_EXTRA_WORDS]
    return list(SPECIAL_TOKENS) + list(dict.fromkeys(words))


def build_tiny_blip(
    folder: str | os.PathLike,
    image_size: int = 64,
    patch_size: int = 8,
    seed: int = 0,
    hidden_size: int = 64,
    vision_layers: int = 2,
    text_layers: int = 3,
    heads: int = 2,
    text_initializer_range: float = 0.1,
    mlp_ratio: int = 2,
) -> Path:
    """Write a random-init BLIP-ITM, its offline tokenizer and image processor to `folder`.

    The text encoder starts wider than BERT's 0.02: with 0.02 its random cross-attention passes
    almost nothing of the image into the fused [CLS] (std across images ~0.003), and ITM sits at
    chance for hundreds of steps; with 0.1 the image signal is ~25x larger and ITM learns at once.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size must be divisible by patch_size {patch_size} but is {image_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = shapes_vocabulary()
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    ids = {token: vocab.index(token) for token in SPECIAL_TOKENS}
    config = BlipConfig(
        vision_config=dict(
            hidden_size=hidden_size, intermediate_size=mlp_ratio * hidden_size, num_hidden_layers=vision_layers,
            num_attention_heads=heads, image_size=image_size, patch_size=patch_size,
            initializer_range=0.02,  # the default 1e-10 leaves a vision tower blind to the image
        ),
        text_config=dict(
            vocab_size=len(vocab), hidden_size=hidden_size, encoder_hidden_size=hidden_size,
            intermediate_size=mlp_ratio * hidden_size, num_hidden_layers=text_layers, num_attention_heads=heads,
            max_position_embeddings=2 * DEFAULT_MAX_TEXT_TOKENS,
            pad_token_id=ids["[PAD]"], bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"],
            sep_token_id=ids["[SEP]"], initializer_range=text_initializer_range,
        ),
        image_text_hidden_size=hidden_size,
    )
    torch.manual_seed(seed)
    model = BlipForImageTextRetrieval(config)
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    model.save_pretrained(folder)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_tiny_albef(
    folder: str | os.PathLike,
    image_size: int = 64,
    patch_size: int = 8,
    seed: int = 0,
    width: int = 64,
    vision_layers: int = 2,
    text_layers: int = 4,
    fusion_layer: int = 2,
    heads: int = 2,
    text_initializer_range: float = 0.1,
) -> Path:
    """Write a random-init ALBEF with the shapes vocabulary to `folder` (GradCAM on its first fusion
    layer; the wider text init is the tiny BLIP's, for the same reason: see `build_tiny_blip`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = shapes_vocabulary()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = AlbefConfig(
        image_size=image_size, patch_size=patch_size, vision_width=width, vision_layers=vision_layers,
        vision_heads=heads, vocab_size=len(vocab), text_width=width, text_layers=text_layers, text_heads=heads,
        intermediate_size=2 * width, fusion_layer=fusion_layer, max_position_embeddings=64, embed_dim=width,
        gradcam_layer=fusion_layer, max_text_tokens=25, initializer_range=text_initializer_range,
    )
    torch.manual_seed(seed)
    model = AlbefModel(config)
    # The vision tower keeps ViT's 0.02 init: the text's 0.1 through two blocks saturates its LayerNorms.
    for module in model.visual_encoder.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
    save_pretrained(folder, model, AlbefTokenizer(folder / "vocab.txt", config.pad_token_id))
    return folder


def build_blip_itm_shapes(folder: Path) -> None:
    """The random-init BLIP-ITM that the shapes recipe fine-tunes."""
    build_tiny_blip(folder)


def build_albef_shapes(folder: Path) -> None:
    """A random-init ALBEF with the shapes vocabulary, the ALBEF peer of blip-itm-shapes."""
    build_tiny_albef(folder)


BUILDERS = {"blip-itm-shapes": build_blip_itm_shapes, "albef-shapes": build_albef_shapes}
