"""The training data path: a columnar index of triplets, a step-indexed batch plan split by rank,
and a `torch.utils.data` pipeline that loads, augments and resizes in worker processes.

- `TripletIndex`: every training triplet as Arrow/NumPy columns (image path dictionary, phrases,
  boxes with offsets, source), read from one Parquet file. No Python object per triplet, so 2.6M
  triplets fit in a few hundred MB and forked workers share the buffers (bench/training_throughput.py).
- `BatchPlan`: the global batch of every step from (seed, step) only, as `TripletStream` did: each
  epoch a seeded permutation per source, real triplets filling a fixed share. Rank r of W takes the
  r-th contiguous slice of B / W, so W ranks see together exactly the samples one rank sees.
- `StepBatchSampler` + `TripletDataset` + `collate`: a DataLoader yielding `LoadedBatch`es (CPU,
  pinnable) for steps start..end; its content depends on (seed, step, rank, world size) only, not
  on `num_workers`.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image

from synground_assets.grounding.data import Augmentation, Triplet, augment, training_box_mask
from synground_assets.grounding.model import GroundingInputs
from synground_assets.records.items import derive_seed

SOURCES = ("synthetic", "real")
Preprocessor = Callable[[Sequence[Image.Image], Sequence[str], int], GroundingInputs]


def write_index(
    path: str | os.PathLike,
    images: Sequence[str],
    phrases: Sequence[str],
    boxes_xyxy: np.ndarray | Sequence[Sequence[Sequence[float]]],
    source: str = "synthetic",
) -> Path:
    """Write an index Parquet file: one row per triplet; `boxes_xyxy` (N, 4) with one box per
    triplet, or a list of box lists (a Flickr30k phrase may have several)."""
    if isinstance(boxes_xyxy, np.ndarray):
        values = pa.array(boxes_xyxy.astype(np.float32).ravel())
        boxes = pa.ListArray.from_arrays(pa.array(np.arange(0, len(values) + 1, 4, dtype=np.int32)), values)
    else:
        boxes = pa.array([[float(v) for box in row for v in box] for row in boxes_xyxy], pa.list_(pa.float32()))
    table = pa.table({
        "image": pa.array(images, pa.string()),
        "phrase": pa.array(phrases, pa.string()),
        "boxes_xyxy": boxes,
        "source": pa.array(np.full(len(phrases), source), pa.string()),
    })
    path = Path(path)
    pq.write_table(table, path)
    return path


def write_triplets_index(triplets: Sequence[Triplet], folder: str | os.PathLike, source: str = "synthetic") -> Path:
    """An index of `triplets`; in-memory images are written as PNGs under `folder/images` first."""
    folder = Path(folder)
    rows, saved = [], {}  # image paths; id(image) -> its file: the phrases of one image share it
    for triplet in triplets:
        image = triplet.image
        if isinstance(image, Image.Image):
            if id(image) not in saved:
                (folder / "images").mkdir(parents=True, exist_ok=True)
                saved[id(image)] = folder / "images" / f"{source}-{len(saved):07d}.png"
                image.save(saved[id(image)])
            image = saved[id(image)]
        rows.append(str(image))
    return write_index(folder / f"{source}.parquet", rows, [t.phrase for t in triplets],
                       [t.boxes_xyxy for t in triplets], source)


class TripletIndex:
    """The training triplets as columns. `image_ids` are dictionary codes of the image path, so two
    rows share an image exactly when their codes match."""

    def __init__(self, table: pa.Table):
        unknown = set(pc.unique(table["source"]).to_pylist()) - set(SOURCES)
        if unknown:
            raise ValueError(f"index: unknown source(s) {sorted(unknown)}; expected {', '.join(SOURCES)}")
        images = pc.dictionary_encode(table["image"].combine_chunks())
        self.image_paths: pa.StringArray = images.dictionary
        self.image_ids = images.indices.to_numpy().astype(np.int32)  # (N,)
        self.phrases: pa.StringArray = table["phrase"].combine_chunks()
        boxes = table["boxes_xyxy"].combine_chunks()
        self.box_offsets = boxes.offsets.to_numpy() // 4  # (N + 1,) rows of `boxes` per triplet
        self.boxes = boxes.values.to_numpy().reshape(-1, 4)  # (M, 4) x0 y0 x1 y1, pixels
        if (np.diff(self.box_offsets) < 1).any() or (self.boxes[:, 2:] <= self.boxes[:, :2]).any():
            raise ValueError("index: every triplet needs at least one box with x1 > x0 and y1 > y0")
        source = table["source"].combine_chunks()
        self.rows_by_source = {name: np.flatnonzero(pc.equal(source, name).to_numpy(zero_copy_only=False))
                               for name in SOURCES}

    @classmethod
    def read(cls, *paths: str | os.PathLike) -> TripletIndex:
        index = cls(pa.concat_tables([pq.read_table(p, columns=["image", "phrase", "boxes_xyxy", "source"])
                                      for p in paths]))
        # Arrow's allocator keeps the freed decode buffers; give them back (halves the resident growth).
        pa.default_memory_pool().release_unused()
        return index

    def __len__(self) -> int:
        return len(self.image_ids)

    def nbytes(self) -> int:
        """Host memory of the index's columns."""
        arrays = (self.image_ids, self.box_offsets, self.boxes, *self.rows_by_source.values())
        return self.image_paths.nbytes + self.phrases.nbytes + sum(a.nbytes for a in arrays)

    def triplet(self, row: int) -> Triplet:
        boxes = self.boxes[self.box_offsets[row] : self.box_offsets[row + 1]]
        path = self.image_paths[int(self.image_ids[row])].as_py()
        return Triplet(path, self.phrases[row].as_py(), [tuple(b) for b in boxes.tolist()], path)


class BatchPlan:
    """Which rows make step `step`'s global batch, with one augmentation seed per row."""

    def __init__(self, index: TripletIndex, batch_size: int, seed: int, real_ratio: float = 0.0):
        synthetic, real = index.rows_by_source["synthetic"], index.rows_by_source["real"]
        if not len(synthetic) and not len(real):
            raise ValueError("no training triplets")
        if real_ratio and not len(real):
            raise ValueError(f"real_data_ratio is {real_ratio} but no real triplets were given")
        real_per_batch = round(batch_size * real_ratio) if len(real) else 0
        if not len(synthetic):
            real_per_batch = batch_size
        self.sources = [("synthetic", synthetic, batch_size - real_per_batch), ("real", real, real_per_batch)]
        self.batch_size, self.seed = batch_size, seed
        self._orders: dict[tuple[str, int], np.ndarray] = {}

    def _order(self, name: str, epoch: int, size: int) -> np.ndarray:
        if (name, epoch) not in self._orders:
            if len(self._orders) > 8:
                self._orders.clear()
            generator = torch.Generator().manual_seed(derive_seed(self.seed, name, epoch))
            self._orders[name, epoch] = torch.randperm(size, generator=generator).numpy()
        return self._orders[name, epoch]

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """(index row, augmentation seed) of every sample of the step, in batch order."""
        picked = []
        for name, rows, count in self.sources:
            for slot in range(step * count, (step + 1) * count):
                epoch, position = divmod(slot, len(rows))
                picked.append((int(rows[self._order(name, epoch, len(rows))[position]]),
                               derive_seed(self.seed, name, "augment", slot)))
        return picked

    def rank_batch(self, step: int, rank: int, world_size: int) -> list[tuple[int, int]]:
        """Rank `rank`'s contiguous share of the global batch."""
        share = self.batch_size // world_size
        return self.global_batch(step)[rank * share : (rank + 1) * share]


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's (row, seed) list for steps start..end-1: a resumed run starts mid-stream
    and sees the batches a straight run saw."""

    def __init__(self, plan: BatchPlan, start: int, end: int, rank: int = 0, world_size: int = 1):
        if plan.batch_size % world_size:
            raise ValueError(f"batch_size {plan.batch_size} must be divisible by the world size {world_size}")
        self.plan, self.start, self.end, self.rank, self.world_size = plan, start, end, rank, world_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.end):
            yield self.plan.rank_batch(step, self.rank, self.world_size)

    def __len__(self) -> int:
        return self.end - self.start


def phrase_key(phrase: str) -> int:
    """A 63-bit key of the normalised phrase: equal phrases are positives for each other (ITC),
    and integer keys can be gathered across ranks."""
    normalised = " ".join(phrase.lower().split())
    return int.from_bytes(hashlib.blake2b(normalised.encode(), digest_size=8).digest(), "big") >> 1


@dataclass
class LoadedBatch:
    """One rank's share of a step's batch, on the CPU until `to(device)`."""

    inputs: GroundingInputs
    masks: torch.Tensor  # (b, H, W) box masks at the input resolution
    image_ids: torch.Tensor  # (b,) int64, equal when two samples show one image
    phrase_keys: torch.Tensor  # (b,) int64, equal when two samples have one (augmented) phrase

    def pin_memory(self) -> LoadedBatch:
        inputs = GroundingInputs(*(t.pin_memory() for t in (self.inputs.pixel_values, self.inputs.input_ids,
                                                            self.inputs.attention_mask)))
        return LoadedBatch(inputs, self.masks.pin_memory(), self.image_ids.pin_memory(), self.phrase_keys.pin_memory())

    def to(self, device: torch.device) -> LoadedBatch:
        return LoadedBatch(self.inputs.to(device), self.masks.to(device, non_blocking=True),
                           self.image_ids.to(device, non_blocking=True), self.phrase_keys.to(device, non_blocking=True))


class TripletDataset(torch.utils.data.Dataset):
    """Item (row, seed) -> (augmented image, phrase, box mask at `resolution`, image id); runs in
    the loader's workers."""

    def __init__(self, index: TripletIndex, augmentation: Augmentation | None, resolution: int,
                 mask_style: str = "pixel-centre"):
        self.index, self.augmentation, self.resolution, self.mask_style = index, augmentation, resolution, mask_style

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Image.Image, str, torch.Tensor, int]:
        row, seed = key
        triplet = self.index.triplet(row)
        image, phrase, boxes = triplet.load_image(), triplet.phrase, triplet.boxes_xyxy
        if self.augmentation is not None:
            image, phrase, boxes = augment(image, phrase, boxes, random.Random(seed), self.augmentation)
        mask = training_box_mask(self.mask_style, boxes, image.size, self.resolution)
        return image, phrase, mask, int(self.index.image_ids[row])


class Collate:
    """Samples -> `LoadedBatch`: the model's CPU preprocessing (resize, normalise, tokenise) in the worker."""

    def __init__(self, preprocess: Preprocessor, resolution: int):
        self.preprocess, self.resolution = preprocess, resolution

    def __call__(self, samples) -> LoadedBatch:
        images, phrases, masks, image_ids = zip(*samples)
        inputs = self.preprocess(images, phrases, self.resolution)
        keys = torch.tensor([phrase_key(p) for p in phrases], dtype=torch.int64)
        return LoadedBatch(inputs, torch.stack(masks), torch.tensor(image_ids, dtype=torch.int64), keys)


def make_loader(
    index: TripletIndex,
    plan: BatchPlan,
    preprocess: Preprocessor,
    resolution: int,
    augmentation: Augmentation | None,
    steps: tuple[int, int],
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 2,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
    mask_style: str = "pixel-centre",
) -> torch.utils.data.DataLoader:
    """Batches of steps[0]..steps[1]-1 for one rank; `prefetch_factor` batches per worker in flight;
    box masks drawn as `mask_style` says (grounding/data.py MASK_STYLES)."""
    return torch.utils.data.DataLoader(
        TripletDataset(index, augmentation, resolution, mask_style),
        batch_sampler=StepBatchSampler(plan, *steps, rank=rank, world_size=world_size),
        collate_fn=Collate(preprocess, resolution),
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if num_workers else None,
        persistent_workers=False,
    )


def make_batch(
    preprocess: Preprocessor,
    triplets: Sequence[Triplet],
    seeds: Sequence[int],
    augmentation: Augmentation | None,
    resolution: int,
    mask_style: str = "pixel-centre",
) -> LoadedBatch:
    """One batch loaded in the calling thread, without a DataLoader (what training did before the
    loader; kept for small in-process uses and as the baseline of bench/training_throughput.py)."""
    samples = []
    for triplet, seed in zip(triplets, seeds, strict=True):
        image, phrase, boxes = triplet.load_image(), triplet.phrase, triplet.boxes_xyxy
        if augmentation is not None:
            image, phrase, boxes = augment(image, phrase, boxes, random.Random(seed), augmentation)
        samples.append((image, phrase, training_box_mask(mask_style, boxes, image.size, resolution),
                        phrase_key(triplet.image_key)))
    return Collate(preprocess, resolution)(samples)
