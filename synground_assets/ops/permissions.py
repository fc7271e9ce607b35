"""The permissions a file or folder gets from the umask, whatever its writer chose: `save_pretrained`
writes `model.safetensors` 0600 (safetensors' own choice), which hid the shards, the working
folder's `model/` and the tiny-model cache from the other users of a shared machine. Imports nothing
of the project (every layer may use it)."""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """This process's umask, read without changing it (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: the classic read-and-restore (not thread-safe, hence the fallback only)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give every file and folder under `folder` the permissions the umask allows (0644 files and
    0755 folders under the usual 022), whatever its writer chose."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        path.chmod((0o777 if executable else 0o666) & ~mask)
