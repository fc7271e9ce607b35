"""The model folders the project writes (ALBEF, GLIP): their config file and their atomic publish.
Torch-free, so a config can be read without loading a model library."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

CONFIG_FILE = "config.json"


def save_config(config: Any, folder: str | Path) -> None:
    """A config dataclass as `config.json`, every field written."""
    (Path(folder) / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2))


def read_config(cls: type, folder: str | Path, model_type: str, family: str) -> dict[str, Any]:
    """The fields of `folder`'s `config.json` for dataclass `cls`; an error names the file when it is
    another model's config or holds a field `cls` does not know."""
    path = Path(folder) / CONFIG_FILE
    data = json.loads(path.read_text())
    if data.get("model_type") != model_type:
        raise ValueError(f"{path} is not {family} config (model_type {data.get('model_type')!r}, "
                         f"expected {model_type!r})")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{path}: unknown {family.split()[-1]} config field(s) {', '.join(unknown)}")
    return data


def publish_folder(folder: str | Path, write: Callable[[Path], Any]) -> Path:
    """`write` a model folder next to its destination, then rename it into place, replacing an older
    one whole: a crash never leaves a half-written folder under the final name."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(staging)
        staging.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
