"""`python -m synground_assets.models.glip convert CHECKPOINT.pth OUT_FOLDER [--config tiny|tiny-a|large] [--bert ID]`

Converts an official GLIP checkpoint (glip_tiny_model_o365_goldg.pth, glip_tiny_model_o365_goldg_cc_sbu.pth:
--config tiny; glip_a_tiny_o365.pth: tiny-a; glip_large_model.pth: large; default: read off the keys)
into this project's GLIP folder (model.safetensors, config.json, the bert-base-uncased tokenizer files),
loading it strictly first. The tokenizer comes from --bert (a folder or a Hub id; default
bert-base-uncased from the Hugging Face cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synground_assets.models.folders import publish_folder
from synground_assets.models.glip.config import PRESETS
from synground_assets.models.glip.convert import (
    detect_preset,
    load_official,
    read_official_checkpoint,
    strip_ddp_prefix,
)

BERT_REPO = "bert-base-uncased"


def load_tokenizer(name: str):
    from transformers import BertTokenizerFast

    try:
        # from_pretrained on a folder with vocab.txt gives the right ids under transformers 4.x and 5.x
        # (the constructor's vocab_file argument is ignored by the fast tokenizer in 5.x).
        return BertTokenizerFast.from_pretrained(name)
    except Exception as exc:  # offline and not cached, no such folder
        raise SystemExit(f"could not load the tokenizer {name!r} ({exc}); pass --bert with a folder holding "
                         "bert-base-uncased's vocab.txt / tokenizer.json") from exc


def publish(folder: Path, model, tokenizer) -> Path:
    """Write the folder next to its destination and rename it into place, replacing an older one whole."""
    return publish_folder(folder, lambda staging: model.save_pretrained(staging, tokenizer))


def convert(args: argparse.Namespace) -> int:
    tokenizer = load_tokenizer(args.bert)
    preset = args.config or detect_preset(strip_ddp_prefix(read_official_checkpoint(args.checkpoint)))
    config = PRESETS[preset]()
    if len(tokenizer) != config.vocab_size:
        raise SystemExit(f"the tokenizer {args.bert!r} has {len(tokenizer)} tokens but GLIP's BERT has "
                         f"{config.vocab_size}; pass bert-base-uncased's tokenizer with --bert")
    model = load_official(args.checkpoint, config)
    folder = publish(args.output, model, tokenizer)
    print(f"{args.checkpoint} -> {folder} ({config.variant}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synground_assets.models.glip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("convert", help="an official .pth into a project GLIP folder")
    command.add_argument("checkpoint", type=Path)
    command.add_argument("output", type=Path)
    command.add_argument("--config", choices=sorted(PRESETS), help="tiny (GLIP-T), tiny-a (GLIP-T (A)) or "
                         "large (GLIP-L); default: read off the checkpoint's keys")
    command.add_argument("--bert", default=BERT_REPO, help="tokenizer folder or Hub id (default bert-base-uncased)")
    args = parser.parse_args(argv)
    try:
        return convert(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
