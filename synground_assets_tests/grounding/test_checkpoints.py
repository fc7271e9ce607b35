"""A checkpoint write that fails on a full disk removes its partial file and names the folder and its
free space (issue 30, item 6): on a real 1 MiB tmpfs where this process may mount one (root), else
with the failure torch raises injected at its write."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from synground_assets.grounding.checkpoints import Checkpoints, CheckpointWriteError, TrainingState, save_final
from synground_assets.grounding.config import TrainConfig

FULL_DISK_BYTES = 1 << 20  # the tmpfs; the state below needs 4 MiB


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """(a folder on a 1 MiB file system, whether it is a real one)."""
    folder = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FULL_DISK_BYTES}", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:  # not root: torch's own full-disk error, after a partial write, at its write layer
        real_save = torch.save

        def full_disk_save(obj, path, *args, **kwargs):
            Path(path).write_bytes(b"\0" * FULL_DISK_BYTES)
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1048576 vs 1048512")

        monkeypatch.setattr(torch, "save", full_disk_save)
        assert real_save is not torch.save
    yield folder / "checkpoints", mounted
    if mounted:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def training_state() -> TrainingState:
    model = nn.Linear(1024, 1024)  # 4 MiB of float32
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainingState(model, nn.Module(), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
                         torch.amp.GradScaler("cpu", enabled=False))


def test_a_checkpoint_that_does_not_fit_removes_its_partial_file_and_names_the_folder_and_free_space(small_disk):
    folder, mounted = small_disk
    checkpoints = Checkpoints(folder, TrainConfig())
    with pytest.raises(CheckpointWriteError) as error:
        checkpoints.save(7, [], training_state())
    message = str(error.value)
    assert f"checkpoint step 7 could not be written to {folder}" in message, message
    assert "MiB free there, the write needs about 4.0 MiB" in message, message
    assert not list(folder.glob("step-*")), "the partial step-*.tmp stayed on the full disk"
    if mounted:  # the space the partial file held is free again
        assert shutil.disk_usage(folder).free > FULL_DISK_BYTES * 0.9


def test_a_checkpoint_that_fits_is_written_whole(tmp_path):
    path = Checkpoints(tmp_path, TrainConfig()).save(1, [], training_state())
    assert path.name == "step-0000001.pt" and not list(tmp_path.glob("*.tmp"))


def modes(folder: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777) for p in [folder, *folder.rglob("*")]}


def test_the_final_model_folder_gets_the_umask_permissions_not_safetensors_0600(tiny_model, tmp_path):
    """Issue 30 (minor): the working folder's model/ stayed 0600 (safetensors' choice)."""
    previous = os.umask(0o022)
    try:
        final = save_final(tmp_path, tiny_model, TrainConfig(), {"loss": 1.0})
    finally:
        os.umask(previous)
    assert (final / "model.safetensors").is_file()
    assert modes(final) == {("dir", 0o755), ("file", 0o644)}
