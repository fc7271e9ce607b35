"""The `tiny:` model source: tiny random-weight versions of the model classes the pipeline uses,
built offline.

Tests and the `tiny-*` recipes run the real `from_pretrained` + inference code of each adapter on
these: same classes, same processors and file layout as the hub checkpoints, but a few thousand
parameters, random weights (fixed seed) and tokenizers trained here on a small corpus, so nothing is
downloaded and every model builds in well under a second.

A recipe names a tiny model as `tiny:<name>` (for example `model: tiny:llava`); `adapters/hf_common.py`
resolves that reference at load time to `<cache>/<name>`, building the model first if needed. The
cache is `$SYNGROUND_TINY_MODELS`, else `~/.cache/synground/tiny`. Building is idempotent (a
finished model has a `.complete` marker) and atomic (built in a temporary folder, then renamed), so
parallel processes can ask for the same model.

One module per family holds its builders (`text`, `vision_language`, `diffusion`, `detection`,
`glip`, `grounding`, `photos`); tests add builders of their own with `register`.

    python -m synground_assets.tiny [folder]     # build them all

Random weights produce arbitrary text, images and boxes: these models test the plumbing, never the
quality of the data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from synground_assets.config import settings
from synground_assets.ops.permissions import apply_umask
from synground_assets.tiny import detection, diffusion, glip, grounding, photos, text, vision_language

PREFIX = "tiny:"  # a recipe's `model: tiny:<name>`
SEED = 0
COMPLETE_MARKER = ".complete"

Builder = Callable[[Path], None]
BUILDERS: dict[str, Builder] = {
    **text.BUILDERS, **vision_language.BUILDERS, **diffusion.BUILDERS, **detection.BUILDERS,
    **glip.BUILDERS, **grounding.BUILDERS, **photos.BUILDERS,
}


def register(name: str, builder: Builder) -> None:
    """Add a builder (tests register the models only they use); a name is registered once."""
    if BUILDERS.get(name, builder) is not builder:
        raise ValueError(f"tiny model {name!r} is already registered to {BUILDERS[name].__qualname__}")
    BUILDERS[name] = builder


def cache_dir() -> Path:
    return Path(settings.tiny_models() or Path.home() / ".cache" / "synground" / "tiny")


def ensure_tiny(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of tiny model `name`, built first if it is not there yet."""
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; expected one of {', '.join(BUILDERS)}")
    root = Path(root) if root is not None else cache_dir()
    folder = root / name
    if (folder / COMPLETE_MARKER).exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    staging.chmod(0o755)
    try:
        import torch

        torch.manual_seed(SEED)
        BUILDERS[name](staging)
        (staging / COMPLETE_MARKER).write_text("built by synground_assets.tiny\n")
        apply_umask(staging)  # save_pretrained's 0600 weights: a shared cache readable by every user
        if folder.exists():  # an unfinished build from a crashed process
            shutil.rmtree(folder, ignore_errors=True)
        try:
            staging.rename(folder)
        except OSError:  # another process published it first
            if not (folder / COMPLETE_MARKER).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_all(root: str | os.PathLike | None = None) -> dict[str, Path]:
    return {name: ensure_tiny(name, root) for name in BUILDERS}
