"""The project's ALBEF folder: `model.safetensors` + `config.json` + `vocab.txt`, and, converted from a
pretrain-layout checkpoint, `pretraining.safetensors` (momentum copies and queues)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from synground_assets.models.albef.modeling import AlbefModel
from synground_assets.models.albef.processing import VOCAB_FILE, AlbefTokenizer
from synground_assets.models.folders import publish_folder

PRETRAINING_FILE = "pretraining.safetensors"  # momentum copies and queues of a pretrain-layout checkpoint


def save_pretrained(folder: str | os.PathLike, model: AlbefModel, tokenizer: AlbefTokenizer,
                    pretraining: dict[str, torch.Tensor] | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"the vocabulary has {len(tokenizer)} tokens "
                         f"but the model's config says {model.config.vocab_size}")
    model.save_weights(folder)
    tokenizer.save(folder)
    if pretraining:
        save_file({k: v.detach().contiguous().cpu() for k, v in pretraining.items()}, str(folder / PRETRAINING_FILE))
    return folder


def read_pretraining_state(folder: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """The folder's momentum copies and queues (`PRETRAINING_FILE`), or None when it has none."""
    path = Path(folder) / PRETRAINING_FILE
    return load_file(str(path)) if path.is_file() else None


def from_pretrained(folder: str | os.PathLike) -> tuple[AlbefModel, AlbefTokenizer]:
    folder = Path(folder)
    if not (folder / VOCAB_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {VOCAB_FILE}; "
                                "an ALBEF folder holds model.safetensors, config.json, vocab.txt")
    model = AlbefModel.from_folder(folder)
    tokenizer = AlbefTokenizer(folder / VOCAB_FILE, model.config.pad_token_id)
    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"{folder}: {VOCAB_FILE} has {len(tokenizer)} tokens "
                         f"but config.json says {model.config.vocab_size}")
    return model, tokenizer


def publish(folder: str | os.PathLike, model: AlbefModel, tokenizer: AlbefTokenizer,
            pretraining: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the folder next to its destination and rename it into place, replacing an older one whole."""
    return publish_folder(folder, lambda staging: save_pretrained(staging, model, tokenizer, pretraining))
