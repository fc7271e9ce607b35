"""Open-vocabulary detectors played by transformers models: any `AutoModelForZeroShotObjectDetection`
architecture (Grounding DINO, MM-Grounding-DINO, OWLv2, OWL-ViT, OmDet-Turbo, ...).

For each image and its phrases the detector scores every (query box, phrase) pair; a pair is kept
when its score passes the thresholds, and each phrase keeps its `top_k` best boxes (default 1: the
phrase-grounding setting of the paper, one box per phrase). Boxes come back in pixels, xyxy, of the
image as given (before the processor's resizing and padding).

Scores (options `box_threshold`, `text_threshold`, `top_k`):
- Grounding DINO family: the phrases form one caption, "a cat. a couch."; a query's score for a
  phrase is the highest token probability within the phrase's tokens. As in Grounding DINO's own
  demo, a query is a box when its highest probability over all tokens reaches `box_threshold`
  (default 0.35) and it belongs to a phrase whose score reaches `text_threshold` (default 0.25).
  Phrases whose tokens fall beyond the model's `max_text_len` cannot be detected.
- OWLv2: one text query per phrase; a box is kept for a phrase when its probability reaches
  `box_threshold` (default 0.1); `text_threshold` does not apply.
- OmDet-Turbo: one class query per phrase (its processor writes the task prompt "Detect a cat, a
  couch."); a box is kept for a phrase when its class probability (sigmoid, as its own
  post-processing) reaches `box_threshold` (default 0.3, OmDet-Turbo's own). Scored here rather than
  by the processor's `post_process_grounded_object_detection`, which needs torchvision's NMS: every
  (query, phrase) pair is scored, where that keeps only the image's best num_queries (900) pairs. As for
  OWLv2, the `top_k` boxes of a phrase are not suppressed against each other.
- Any other zero-shot detector (OWL-ViT, ...): one text query per phrase, scored by the processor's
  own `post_process_grounded_object_detection` at `box_threshold` (default 0.1 for OWL-ViT, else
  0.3); each box belongs to its best phrase.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from synground_assets.adapters.hf_common import (
    ModelAdapter,
    load_processor,
    pick_class,
    pretrained_kwargs,
    read_json,
    resolve_model,
)
from synground_assets.roles.base import Detection, Detector
from synground_assets.roles.spec import RoleSpec

CAPTION_KINDS = ("grounding-dino", "mm-grounding-dino")  # the phrases form one caption
DEFAULT_BOX_THRESHOLD = {"grounding-dino": 0.35, "mm-grounding-dino": 0.35, "owlv2": 0.1, "owlvit": 0.1,
                         "omdet-turbo": 0.3}
OTHER_BOX_THRESHOLD = 0.3


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def caption_from_phrases(phrases: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Grounding DINO's caption format, lower case with ' . ' separators, and each phrase's
    (start, end) characters in it: ['A cat', 'a couch'] -> ('a cat . a couch .', [(0, 5), (8, 15)])."""
    caption, spans = "", []
    for phrase in phrases:
        phrase = " ".join(phrase.lower().split())
        spans.append((len(caption), len(caption) + len(phrase)))
        caption += phrase + " . "
    return caption.strip(), spans


class ZeroShotDetector(ModelAdapter, Detector):
    role = "detector"

    def __init__(self, spec: RoleSpec):
        super().__init__(spec)
        from transformers import AutoModelForZeroShotObjectDetection
        from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES

        # 1. Check the architecture before loading weights (the catalog checked the settings).
        location = resolve_model(spec.model, self.role, spec.revision)
        self.kind, _ = pick_class(read_json(location, "config.json").get("model_type"),
                                  MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES, location, self.role)
        options = spec.options
        self.box_threshold = options.get("box_threshold", DEFAULT_BOX_THRESHOLD.get(self.kind, OTHER_BOX_THRESHOLD))
        self.text_threshold = options.get("text_threshold", 0.25)
        self.top_k = options.get("top_k", 1)
        # 2. Load processor and model.
        self.processor = load_processor(location, self.kind, self.role)
        self.model = AutoModelForZeroShotObjectDetection.from_pretrained(
            location.path, dtype=self.dtype, **pretrained_kwargs(location)).to(self.device).eval()
        self.info.settings.update({"architecture": self.kind, "box_threshold": self.box_threshold,
                                   "text_threshold": self.text_threshold, "top_k": self.top_k})

    @torch.inference_mode()
    def detect(self, images: Sequence[Image.Image], phrases: Sequence[Sequence[str]]) -> list[list[Detection]]:
        if len(images) != len(phrases):
            raise ValueError(f"got {len(images)} images but {len(phrases)} phrase lists")
        results: list[list[Detection]] = [[] for _ in images]
        # Images without phrases have nothing to look for: they skip the model.
        todo = [i for i, p in enumerate(phrases) if p]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            batch_images = [images[i].convert("RGB") for i in chunk]
            batch_phrases = [list(phrases[i]) for i in chunk]
            if self.kind in CAPTION_KINDS:
                scores, boxes = self.score_grounding_dino(batch_images, batch_phrases)
            elif self.kind == "owlv2":
                scores, boxes = self.score_owlv2(batch_images, batch_phrases)
            elif self.kind == "omdet-turbo":
                scores, boxes = self.score_omdet_turbo(batch_images, batch_phrases)
            else:
                scores, boxes = self.score_post_processed(batch_images, batch_phrases)
            for index, image, item_scores, item_boxes in zip(chunk, batch_images, scores, boxes):
                results[index] = self.select(item_scores, item_boxes, image.size)
        return results

    def score_grounding_dino(self, images, phrases) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: scores (Q, P) of every query for every phrase, -1 where below threshold, and
        boxes (Q, 4) normalised xyxy."""
        # 1. Captions and which tokens belong to which phrase.
        captions, spans = zip(*(caption_from_phrases(p) for p in phrases))
        inputs = self.processor(images=images, text=list(captions), return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        # 2. Forward.
        outputs = self.model(**inputs)
        probs = outputs.logits.float().sigmoid()  # (B, Q, max_text_len)
        boxes = box_cxcywh_to_xyxy(outputs.pred_boxes.float())  # (B, Q, 4), relative to each unpadded image
        # 3. Phrase scores: the best token of each phrase.
        scores = []
        for b, (caption, item_spans) in enumerate(zip(captions, spans)):
            offsets = self.processor.tokenizer(caption, return_offsets_mapping=True)["offset_mapping"]
            token_phrase = torch.full((probs.shape[-1],), -1)
            for token, (start, end) in enumerate(offsets[:probs.shape[-1]]):
                for p, (span_start, span_end) in enumerate(item_spans):
                    if end > start and span_start <= start and end <= span_end:
                        token_phrase[token] = p
            item = torch.full((probs.shape[1], len(item_spans)), -1.0)  # (Q, P)
            for p in range(len(item_spans)):
                tokens = (token_phrase == p).nonzero().flatten()
                if len(tokens):
                    item[:, p] = probs[b][:, tokens].max(dim=-1).values
            is_box = probs[b].max(dim=-1).values >= self.box_threshold  # (Q,)
            item[~is_box] = -1.0
            item[item < self.text_threshold] = -1.0
            scores.append(item)
        return scores, list(boxes)

    def score_owlv2(self, images, phrases) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        inputs = self.processor(images=images, text=phrases, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        outputs = self.model(**inputs)
        probs = outputs.logits.float().sigmoid()  # (B, patches, max phrases in the batch)
        # OWLv2 pads each image to a square at the bottom right: boxes are relative to that square.
        boxes = box_cxcywh_to_xyxy(outputs.pred_boxes.float())
        scores, square_boxes = [], []
        for b, (image, item_phrases) in enumerate(zip(images, phrases)):
            item = probs[b][:, :len(item_phrases)].clone()  # (patches, P); padded queries dropped
            item[item < self.box_threshold] = -1.0
            scores.append(item)
            side = max(image.size)
            square_boxes.append(boxes[b] * side / torch.tensor([image.width, image.height] * 2))
        return scores, square_boxes

    def score_omdet_turbo(self, images, phrases) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # The model pads shorter class lists with zeros, and a padding class takes part in choosing the
        # queries: lists are padded with their own first phrase instead (it changes no query's best
        # class), the task prompt naming the real phrases only, so an image's boxes do not depend on its batch.
        longest = max(len(p) for p in phrases)
        padded = [list(p) + [p[0]] * (longest - len(p)) for p in phrases]
        tasks = [f"Detect {', '.join(p)}." for p in phrases]  # the processor's own prompt
        inputs = self.processor(images=images, text=padded, task=tasks, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        outputs = self.model(**inputs)
        probs = outputs.decoder_class_logits.float().sigmoid()  # (B, Q, most phrases in the batch)
        # Boxes are relative to the resized (unpadded) image, so to the image as given.
        boxes = box_cxcywh_to_xyxy(outputs.decoder_coord_logits.float())  # (B, Q, 4)
        scores = []
        for b, item_phrases in enumerate(phrases):
            item = probs[b][:, :len(item_phrases)].clone()  # (Q, P); padding copies dropped
            item[item < self.box_threshold] = -1.0
            scores.append(item)
        return scores, list(boxes)

    def score_post_processed(self, images, phrases) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The processor's own post-processing: per image, its kept boxes (N, 4) normalised xyxy and a
        score matrix (N, P) holding each box's score at its phrase, -1 elsewhere."""
        # Each box goes to its best query: a blank padding query would compete for it, so shorter
        # lists are padded with their own first phrase (a tie, which the first copy wins) instead.
        longest = max(len(p) for p in phrases)
        padded = [list(p) + [p[0]] * (longest - len(p)) for p in phrases]
        inputs = self.processor(images=images, text=padded, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        outputs = self.model(**inputs)
        sizes = [(image.height, image.width) for image in images]
        kept = self.processor.post_process_grounded_object_detection(outputs, threshold=self.box_threshold,
                                                                     target_sizes=sizes)
        scores, boxes = [], []
        for image, item_phrases, result in zip(images, phrases, kept):
            labels = result["labels"].tolist()
            real = [n for n, label in enumerate(labels) if label < len(item_phrases)]  # padding copies dropped
            item = torch.full((len(real), len(item_phrases)), -1.0)  # (N, P)
            for row, n in enumerate(real):
                item[row, labels[n]] = float(result["scores"][n])
            scale = torch.tensor([image.width, image.height] * 2, dtype=torch.float32)
            boxes.append(result["boxes"][real].float().cpu() / scale)  # (N, 4), pixels -> normalised
            scores.append(item)
        return scores, boxes

    def select(self, scores: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> list[Detection]:
        """The top_k scoring boxes of each phrase. scores (Q, P), -1 = rejected; boxes (Q, 4) normalised.
        A box that lies outside the image once clipped is dropped, not replaced by the next best."""
        width, height = size
        detections = []
        for p in range(scores.shape[1]):
            ranked = scores[:, p].argsort(descending=True, stable=True)[:self.top_k]
            for q in ranked.tolist():
                score = float(scores[q, p])
                if score < 0:
                    break
                x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in boxes[q].tolist())
                if x1 <= x0 or y1 <= y0:
                    continue  # nothing left of the box inside the image
                box = (x0 * width, y0 * height, x1 * width, y1 * height)
                detections.append(Detection(phrase_index=p, box_xyxy=box, score=score))
        return detections
