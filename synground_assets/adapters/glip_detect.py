"""GLIP (Li et al., CVPR 2022), the SynGround paper's detector, as the `glip` detector adapter.

The model is the project's plain-PyTorch port (`models/glip/`) loaded from a converted folder
(`python -m synground_assets.models.glip convert <official .pth> <folder>`, docs/glip.md), a hub
repository holding such a folder, or `tiny:glip`. Inputs and outputs follow the official demo
predictor (`models/glip/processing.py`): each image's phrases form one caption "a cat . a couch . ",
the image is resized to a shorter side of 800 (option `min_size`), and the model's detections
(after its own 0.05 candidate threshold, top 1000 per level, class-wise NMS at 0.6 and the best 100)
come back in the image's pixels with 1-based phrase labels.

Options: `box_threshold` (default 0.5, what the demo's `run_on_web_image` keeps for phrase
grounding: score > threshold, strictly), `top_k` (the best boxes kept per phrase, default 1: the
paper's one box per phrase), `min_size` (the demo's `min_image_size`, default 800).

Batching: an image's padded size changes its result (the fusion's text-to-image softmax and the
GroupNorms see the padding), so images are batched only with images of the same padded size; each
result is then the one the demo gives for the image alone. An image with more phrases than the
head's label slots (`num_classes`, 80: cls_logits' channels size the score tensor,
mb/modeling/rpn/inference.py:772-778) is run in several captions of at most that many phrases (the
official code would fail on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from synground_assets.adapters.hf_common import ModelAdapter, ModelLocation, hub_offline, resolve_model
from synground_assets.adapters.loading import ModelLoadError
from synground_assets.models.glip.processing import DEMO_THRESHOLD, MIN_IMAGE_SIZE, GlipProcessor
from synground_assets.roles.base import Detection, Detector
from synground_assets.roles.spec import RoleSpec

CONVERT_HINT = ("convert an official checkpoint with `python -m synground_assets.models.glip convert "
                "<official .pth> <folder>` (docs/glip.md)")


def model_folder(location: ModelLocation) -> str:
    """A local folder for the model: the folder itself, or the hub repository's snapshot."""
    if location.is_local:
        return location.path
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(location.path, revision=location.revision, local_files_only=hub_offline())
    except Exception as exc:  # network, missing repository, not cached while offline
        raise ModelLoadError(f"role 'detector': cannot fetch GLIP model {location.reference!r} (no such local "
                             f"folder; tried it as a hub repository): {exc}; {CONVERT_HINT}") from exc


class GlipDetector(ModelAdapter, Detector):
    role = "detector"

    def __init__(self, spec: RoleSpec):
        super().__init__(spec)
        from transformers import BertTokenizerFast

        from synground_assets.models.glip.modeling import GlipForGrounding

        options = spec.options
        self.box_threshold = float(options.get("box_threshold", DEMO_THRESHOLD))
        self.top_k = int(options.get("top_k", 1))
        self.min_size = int(options.get("min_size", MIN_IMAGE_SIZE))
        location = resolve_model(spec.model, self.role, spec.revision)
        folder = model_folder(location)
        try:
            model = GlipForGrounding.from_pretrained(folder)
            # bert-base-uncased's fast WordPiece (the official AutoTokenizer gives the same class,
            # generalized_vl_rcnn.py:92); the folder's config.json is GLIP's, which AutoTokenizer cannot read.
            tokenizer = BertTokenizerFast.from_pretrained(folder, local_files_only=True)
            self.processor = GlipProcessor.from_config(tokenizer, model.config, min_size=self.min_size)
            self.max_phrases = int(model.config.num_classes)
        except Exception as exc:  # a folder that is not a converted GLIP, a bad config, missing files
            raise ModelLoadError(f"role 'detector': cannot load GLIP model {spec.model!r} from folder "
                                 f"{str(Path(folder))!r}: {exc}; {CONVERT_HINT}") from exc
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.info.settings.update({"architecture": "glip", "box_threshold": self.box_threshold,
                                   "top_k": self.top_k, "min_size": self.min_size})

    @torch.inference_mode()
    def detect(self, images: Sequence[Image.Image], phrases: Sequence[Sequence[str]]) -> list[list[Detection]]:
        if len(images) != len(phrases):
            raise ValueError(f"got {len(images)} images but {len(phrases)} phrase lists")
        results: list[list[Detection]] = [[] for _ in images]
        for group in self.batches(images, phrases):
            batch_images = [images[index].convert("RGB") for index, _ in group]
            batch_phrases = [list(phrases[index][offset:offset + self.max_phrases]) for index, offset in group]
            for (index, offset), detections in zip(group, self.run(batch_images, batch_phrases)):
                results[index].extend(
                    Detection(d.phrase_index + offset, d.box_xyxy, d.score) for d in detections)
        return results

    def batches(self, images, phrases) -> list[list[tuple[int, int]]]:
        """(image index, first phrase) pairs in batches of at most batch_size, each of one padded
        size (sizes in the order their first image came, images in order within one); images without
        phrases are left out."""
        by_shape: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for index, (image, item) in enumerate(zip(images, phrases)):
            for offset in range(0, len(item), self.max_phrases):
                by_shape.setdefault(self.processor.padded_shape(image), []).append((index, offset))
        return [work[start:start + self.batch_size] for work in by_shape.values()
                for start in range(0, len(work), self.batch_size)]

    def run(self, images: list[Image.Image], phrases: list[list[str]]) -> list[list[Detection]]:
        """One forward over images of one padded size; per image its kept detections."""
        inputs = self.processor(images, phrases)
        maps = inputs.model_positive_maps()
        outputs = self.model.detect(
            pixel_values=inputs.pixel_values.to(device=self.device, dtype=self.dtype),
            image_sizes=inputs.image_sizes, input_ids=inputs.input_ids.to(self.device),
            attention_mask=inputs.attention_mask.to(self.device), positive_maps=maps)
        return [self.select(output, resized, original)
                for output, resized, original in zip(outputs, inputs.image_sizes, inputs.original_sizes)]

    def select(self, output, resized: tuple[int, int], original: tuple[int, int]) -> list[Detection]:
        """Boxes scoring above box_threshold (strictly, predictor_glip.py:283), back in the original
        image's pixels (predictor_glip.py:240-242), the top_k best of each phrase."""
        from synground_assets.models.glip.processing import boxes_to_original

        boxes = boxes_to_original(output.boxes_xyxy.detach().float().cpu(), resized, original)
        scores = output.scores.detach().float().cpu()
        labels = output.labels.detach().cpu()
        keep = scores > self.box_threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        order = scores.argsort(descending=True, stable=True)  # predictor_glip.py:286-287
        height, width = original
        taken: dict[int, int] = {}
        detections = []
        for n in order.tolist():
            label = int(labels[n])
            if taken.get(label, 0) >= self.top_k:
                continue
            x0, y0, x1, y1 = boxes[n].tolist()
            # The model clips to [0, w-1] of the resized image (mb/structures/bounding_box.py:97-106),
            # which the resize keeps inside the original; clamped anyway, as every detector's boxes.
            x0, x1 = min(max(x0, 0.0), float(width)), min(max(x1, 0.0), float(width))
            y0, y1 = min(max(y0, 0.0), float(height)), min(max(y1, 0.0), float(height))
            if x1 <= x0 or y1 <= y0:
                continue  # empty: the model keeps x2 >= x1 - 1 (its widths are x2 - x1 + 1), the next box counts
            taken[label] = taken.get(label, 0) + 1
            detections.append(Detection(phrase_index=label - 1, box_xyxy=(x0, y0, x1, y1), score=float(scores[n])))
        return detections
