"""The background PNG writer and the one-batch-ahead preparation: same bytes, errors surface,
order kept."""

import threading

import numpy as np
import pytest
from PIL import Image

from synground_assets.pipeline.batching import prepared_ahead
from synground_assets.pipeline.writing import PngWriter


def picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 30, 3), dtype=np.uint8))


def test_the_writer_writes_the_bytes_a_plain_save_writes(tmp_path):
    (tmp_path / "plain").mkdir()
    with PngWriter(tmp_path / "background", workers=2, max_pending=2) as writer:
        for i in range(6):
            writer.put(f"images/{i:04d}.png", picture(i))
    for i in range(6):
        picture(i).save(tmp_path / "plain" / f"{i}.png", format="PNG")
        assert (tmp_path / "background" / "images" / f"{i:04d}.png").read_bytes() == \
            (tmp_path / "plain" / f"{i}.png").read_bytes()


class Unsavable:
    def save(self, path, format):
        raise ValueError("cannot encode mode 'I;16B'")


def test_a_failed_write_is_raised_when_the_writer_closes(tmp_path):
    writer = PngWriter(tmp_path)
    writer.put("a.png", picture(0))
    writer.put("b.png", Unsavable())
    with pytest.raises(OSError, match="cannot encode mode"):
        writer.close()


def test_batches_are_prepared_one_ahead_in_order():
    events, started = [], threading.Event()

    def prepare(batch):
        events.append(("prepare", batch[0]))
        if batch[0] == 2:
            started.set()
        return [10 * item for item in batch]

    seen = []
    for batch, prepared in prepared_ahead(list(range(5)), 2, prepare):
        if batch[0] == 0:
            assert started.wait(5)  # batch 2 is prepared while batch 0 is being worked on
        seen.append((list(batch), prepared))
    assert seen == [([0, 1], [0, 10]), ([2, 3], [20, 30]), ([4], [40])]
    assert [e for e in events] == [("prepare", 0), ("prepare", 2), ("prepare", 4)]
