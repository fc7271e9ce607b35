"""`python -m synground_assets.models.albef convert CHECKPOINT.pth OUT_FOLDER [--image-size 384]`

Converts an official ALBEF / AMC checkpoint into this project's ALBEF folder (safetensors, config,
vocab), loading it strictly first. The vocabulary is bert-base-uncased's `vocab.txt`: pass it with
--vocab (a file, or a folder holding one), or let it come from the Hugging Face cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from synground_assets.models.albef.config import AlbefConfig
from synground_assets.models.albef.convert import load_official, pretraining_state, read_official_checkpoint
from synground_assets.models.albef.pretrained import publish
from synground_assets.models.albef.processing import VOCAB_FILE, AlbefTokenizer

BERT_VOCAB_REPO = "bert-base-uncased"


def vocab_path(given: str | None) -> Path:
    if given:
        path = Path(given)
        path = path / VOCAB_FILE if path.is_dir() else path
        if not path.is_file():
            raise SystemExit(f"--vocab {given}: no {VOCAB_FILE} there")
        return path
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(BERT_VOCAB_REPO, VOCAB_FILE))
    except Exception as exc:  # offline and not cached, or no network
        raise SystemExit(f"could not get {BERT_VOCAB_REPO}'s {VOCAB_FILE} ({exc}); "
                         "pass --vocab /path/to/vocab.txt") from exc


def convert(args: argparse.Namespace) -> int:
    base = AlbefConfig.load(args.config) if args.config else AlbefConfig()
    config = dataclasses.replace(base, image_size=args.image_size or base.image_size,
                                 gradcam_layer=(args.gradcam_layer if args.gradcam_layer is not None
                                                else base.gradcam_layer),
                                 max_text_tokens=args.max_text_tokens or base.max_text_tokens)
    tokenizer = AlbefTokenizer(vocab_path(args.vocab), config.pad_token_id)
    model = load_official(args.checkpoint, config)
    folder = publish(args.output, model, tokenizer,
                     pretraining_state(read_official_checkpoint(args.checkpoint), config))
    print(f"{args.checkpoint} -> {folder} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{config.image_size} px, {config.grid_side}x{config.grid_side} grid)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synground_assets.models.albef", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("convert", help="an official .pth into a project ALBEF folder")
    command.add_argument("checkpoint", type=Path)
    command.add_argument("output", type=Path)
    command.add_argument("--image-size", type=int, help="square input side the pos_embed is laid out for "
                         "(default 384; AMC trains at 256 and interpolates to 384 for RefCOCO+)")
    command.add_argument("--vocab", help="bert-base-uncased vocab.txt (file or folder); default: the HF cache")
    command.add_argument("--config", type=Path, help="a folder with an ALBEF config.json for other sizes "
                         "(default: ALBEF-base, ViT-B/16 + BERT-base, fusion layer 6)")
    command.add_argument("--gradcam-layer", type=int, help="default 8 (AMC)")
    command.add_argument("--max-text-tokens", type=int, help="training truncation (default 30, ALBEF; AMC: 25)")
    args = parser.parse_args(argv)
    return convert(args)


if __name__ == "__main__":
    sys.exit(main())
