"""Triplets as the Hugging Face `datasets` Parquet layout and as WebDataset tar shards, each with a dataset card.

Input: the triplet table of `datasets/exports.py` (one row per box) and the images root its
`image_path`s are relative to. Both layouts hold one sample per image (item), only boxed phrases
(as the other exports: a phrase without a box would read as a negative):

- `hf/`: `data/train-<i>-of-<n>.parquet`, columns item_id, image (the `Image` feature: a struct of
  the file's bytes and its path), width, height, caption, phrases, phrase_ids, boxes ([x0, y0, x1, y1]
  in pixels, clipped to the image, one per phrase entry), box_ids, scores. `phrase_ids` keeps two
  phrases of one image with the same text apart (two labels, not one). The feature types are in the
  Parquet schema metadata under `huggingface`, which `datasets.load_dataset("parquet", ...)` reads,
  so `image` decodes to a PIL image.
  `README.md` is the dataset card, whose YAML header names the Parquet files as the `train` split and
  carries the Hub's metadata fields (license, task_categories, size_categories, language, pretty_name).
- `webdataset/`: `shard-<i>.tar`, per sample `<key>.png` (or the image's own suffix) and `<key>.json`
  {item_id, caption, width, height, phrases, phrase_ids, boxes, box_ids, scores}; `<key>` is the
  item id with ":" as "-" (WebDataset cuts the key at the first ".", and ":" is not portable in file names).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from synground_assets.datasets.exports import box_of, boxed_rows, caption_with_spans

SAMPLES_PER_SHARD = 1000  # images per Parquet file and per tar: a few hundred MB at 512 px
# The `datasets` feature of the image column; the other columns' features follow from their Arrow types.
HF_FEATURES = {"image": {"_type": "Image"}}
# The Hub's size_categories values (huggingface.co/docs/hub/datasets-cards: size_categories), by item count.
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
# Grounding is detection prompted by text: the Hub's task ids closest to it.
TASK_CATEGORIES = ["object-detection", "zero-shot-object-detection"]


@dataclass(frozen=True)
class Licence:
    """The data's licence as the card's YAML states it: the Hub licence ids of the models that made
    it, or "other" with a name and the reason where one is unknown or no model licence applies."""

    ids: list[str]
    name: str = ""  # the Hub's `license_name`, with "other"
    details: str = ""  # one sentence for the card's text

    def yaml(self) -> str:
        lines = ["license:", *[f"- {licence}" for licence in self.ids]]
        if self.name:
            lines.append(f"license_name: {self.name}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SkippedImage:
    """An image an export left out, with its item's rows: it did not open, verify or decode."""

    item_id: str
    image_path: str
    reason: str


@dataclass(frozen=True)
class CardFacts:
    """What a dataset card states beside the counts: where the data came from and what was filtered."""

    recipe: str
    notes: str
    models: list[tuple[str, str, str]]  # (role, model id or adapter, licence)
    quality_report: pd.DataFrame  # columns of assets/quality_report.REPORT_COLUMNS
    licence: Licence = Licence(["other"], "unspecified", "No licence was derived for this data.")
    skipped: tuple[SkippedImage, ...] = ()


def samples(triplets: pd.DataFrame) -> list[dict]:
    """One dict per image with its boxed phrases, in item order."""
    boxes, _ = boxed_rows(triplets)
    out = []
    for item_id, rows in boxes.groupby("item_id", sort=True):
        caption, _ = caption_with_spans(rows["description"].iloc[0], rows["phrase"])
        out.append({
            "item_id": str(item_id), "image_path": str(rows["image_path"].iloc[0]),
            "width": int(rows["width"].iloc[0]), "height": int(rows["height"].iloc[0]), "caption": caption,
            "phrases": rows["phrase"].astype(str).tolist(),
            "phrase_ids": rows["phrase_id"].astype(str).tolist(),
            "boxes": [list(box_of(row)) for row in rows.itertuples(index=False)],  # (boxes, 4), clipped
            "box_ids": rows["box_id"].astype(str).tolist(),
            "scores": [None if pd.isna(s) else float(s) for s in rows["score"]],
        })
    return out


def write_hf_parquet(triplets: pd.DataFrame, images_root: Path, folder: Path, facts: CardFacts) -> int:
    """The `datasets` Parquet layout under `folder`; returns the number of Parquet files."""
    items = samples(triplets)
    chunks = _chunks(items)
    (folder / "data").mkdir(parents=True)
    schema = _hf_schema()
    for index, chunk in enumerate(chunks):
        columns = {name: [s[name] for s in chunk] for name in schema.names if name != "image"}
        columns["image"] = [{"bytes": (images_root / s["image_path"]).read_bytes(), "path": s["image_path"]}
                            for s in chunk]
        pq.write_table(pa.Table.from_pydict(columns, schema=schema),
                       folder / "data" / f"train-{index:05d}-of-{len(chunks):05d}.parquet")
    header = "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/*.parquet\n"
    (folder / "README.md").write_text(dataset_card(facts, items, len(chunks), "Parquet (Hugging Face `datasets`)",
                                                   header))
    return len(chunks)


def write_webdataset(triplets: pd.DataFrame, images_root: Path, folder: Path, facts: CardFacts) -> int:
    """WebDataset tar shards under `folder`; returns the number of tars."""
    items = samples(triplets)
    chunks = _chunks(items)
    folder.mkdir(parents=True)
    for index, chunk in enumerate(chunks):
        with tarfile.open(folder / f"shard-{index:05d}.tar", "w") as tar:
            for sample in chunk:
                key = webdataset_key(sample["item_id"])
                image = images_root / sample["image_path"]
                _add(tar, f"{key}{image.suffix.lower()}", image.read_bytes())
                record = {k: v for k, v in sample.items() if k != "image_path"}
                _add(tar, f"{key}.json", json.dumps(record).encode())
    (folder / "README.md").write_text(dataset_card(facts, items, len(chunks), "WebDataset tar shards", ""))
    return len(chunks)


def webdataset_key(item_id: str) -> str:
    return item_id.replace(":", "-").replace(".", "_")


def dataset_card(facts: CardFacts, items: list[dict], files: int, layout: str, yaml_header: str) -> str:
    boxes = sum(len(s["boxes"]) for s in items)
    header = (f"{facts.licence.yaml()}task_categories:\n" + "".join(f"- {t}\n" for t in TASK_CATEGORIES)
              + f"size_categories:\n- {size_category(len(items))}\nlanguage:\n- en\n"
              + f"pretty_name: {json.dumps(f'SynGround triplets ({facts.recipe})')}\n{yaml_header}")
    lines = [f"---\n{header}tags:\n- visual-grounding\n- synthetic\n---", "",
             f"# SynGround triplets: recipe `{facts.recipe}`", "", facts.notes.strip(), "",
             f"Licence: {facts.licence.details}", "",
             f"Layout: {layout}, {files} file(s). Boxes are [x0, y0, x1, y1] in pixels of the image.", "",
             "## Counts", "", f"- images: {len(items)}", f"- boxes (phrase, box pairs): {boxes}",
             f"- distinct phrases: {len({p for s in items for p in s['phrases']})}", "",
             "## Models", "", "| role | model | licence |", "|---|---|---|",
             *[f"| {role} | {model} | {licence} |" for role, model, licence in facts.models], "",
             "## Quality report", "", "What the quality filters removed before publishing (per stage and filter).", ""]
    report = facts.quality_report
    if report.empty:
        lines.append("No quality report was recorded for these shards.")
    else:
        lines += ["| " + " | ".join(report.columns) + " |", "|" + "---|" * len(report.columns),
                  *["| " + " | ".join(str(v) for v in row) + " |" for row in report.itertuples(index=False)]]
    lines += ["", "## Skipped images", "",
              f"Images left out of this export because they did not open, verify or decode: {len(facts.skipped)}."]
    if facts.skipped:
        lines += ["", "| item | image | reason |", "|---|---|---|",
                  *[f"| {s.item_id} | {s.image_path} | {s.reason.replace('|', '/')} |" for s in facts.skipped]]
    return "\n".join(lines) + "\n"


def size_category(items: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if items < bound), "n>1B")


def _hf_schema() -> pa.Schema:
    fields = [("item_id", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
              ("width", pa.int32()), ("height", pa.int32()), ("caption", pa.string()),
              ("phrases", pa.list_(pa.string())), ("phrase_ids", pa.list_(pa.string())),
              ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
              ("box_ids", pa.list_(pa.string())), ("scores", pa.list_(pa.float32()))]
    metadata = {"huggingface": json.dumps({"info": {"features": HF_FEATURES}})}
    return pa.schema(fields, metadata=metadata)


def _chunks(items: list[dict]) -> list[list[dict]]:
    return [items[i:i + SAMPLES_PER_SHARD] for i in range(0, len(items), SAMPLES_PER_SHARD)] or [[]]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
