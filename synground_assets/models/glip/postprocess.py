"""ATSS-style inference of GLIP's dot-product head (microsoft/GLIP 9dda955,
maskrcnn_benchmark/modeling/rpn/inference.py:592-835; NMS as the GPU `ml_nms`, csrc/cuda/ml_nms.cu)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from synground_assets.models.glip.anchors import BoxCoder
from synground_assets.models.glip.config import GlipConfig


@dataclass
class GlipDetections:
    """One image's boxes in resized-image pixels (x1, y1, x2, y2), their scores and 1-based phrase labels,
    by descending score (GLIPDemo._post_process order, predictor_glip.py:272-287)."""

    boxes_xyxy: torch.Tensor  # (N, 4) float
    scores: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,) long, 1-based

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def check_positive_map(positive_map: dict[int, list[int]], num_classes: int, num_tokens: int) -> None:
    for label, tokens in positive_map.items():
        if not 1 <= int(label) <= num_classes:
            raise ValueError(f"positive map label {label} is outside 1..{num_classes}: GLIP scores at most "
                             f"{num_classes} phrases per caption (its cls_logits channels); split the phrases")
        if not tokens:
            raise ValueError(f"positive map label {label} has no tokens; drop the phrase or fix its span")
        bad = [t for t in tokens if not 0 <= int(t) < num_tokens]
        if bad:
            raise ValueError(f"positive map label {label} names token(s) {bad} outside 0..{num_tokens - 1}")


def label_scores(token_probs: torch.Tensor, positive_map: dict[int, list[int]], num_classes: int) -> torch.Tensor:
    """(N, T) sigmoid token scores -> (N, num_classes): the MEAN of the sigmoids over each label's tokens
    in column label-1, zero elsewhere (convert_grounding_to_od_logits, inference.py:772-780)."""
    scores = token_probs.new_zeros(token_probs.shape[0], num_classes)
    for label, tokens in positive_map.items():
        scores[:, int(label) - 1] = token_probs[:, torch.as_tensor(tokens, dtype=torch.long,
                                                                   device=token_probs.device)].mean(-1)
    return scores


def select_level(config: GlipConfig, coder: BoxCoder, box_regression: torch.Tensor, centerness: torch.Tensor,
                 logits: torch.Tensor, anchors: torch.Tensor, positive_map: dict[int, list[int]],
                 image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image, one level (forward_for_single_feature_map, inference.py:620-711).
    box_regression (4, H, W), centerness (1, H, W), logits (H*W, T), anchors (H*W, 4)."""
    scores = label_scores(logits.sigmoid(), positive_map, config.num_classes)
    regression = box_regression.permute(1, 2, 0).reshape(-1, 4)
    center = centerness.permute(1, 2, 0).reshape(-1).sigmoid()
    candidates = scores > config.inference_th  # before centerness
    top_n = min(int(candidates.sum()), config.pre_nms_top_n)
    weighted = scores * center[:, None]
    top, index = weighted[candidates].topk(top_n, sorted=True)
    chosen = candidates.nonzero()[index]
    locations, labels = chosen[:, 0], chosen[:, 1] + 1
    boxes = coder.decode(regression[locations].view(-1, 4), anchors[locations].view(-1, 4))
    height, width = image_size
    boxes = torch.stack((boxes[:, 0].clamp(min=0, max=width - 1), boxes[:, 1].clamp(min=0, max=height - 1),
                         boxes[:, 2].clamp(min=0, max=width - 1), boxes[:, 3].clamp(min=0, max=height - 1)), dim=-1)
    # remove_small_boxes: xywh with +1 (boxlist_ops.py:76-90, bounding_box.py convert).
    keep = ((boxes[:, 2] - boxes[:, 0] + 1) >= config.min_size) & ((boxes[:, 3] - boxes[:, 1] + 1) >= config.min_size)
    return boxes[keep], torch.sqrt(top)[keep], labels[keep]


def box_iou_plus_one(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU with +1 in widths and heights (ml_nms.cu:13-24)."""
    left = torch.max(a[:, None, 0], b[None, :, 0])
    right = torch.min(a[:, None, 2], b[None, :, 2])
    top = torch.max(a[:, None, 1], b[None, :, 1])
    bottom = torch.min(a[:, None, 3], b[None, :, 3])
    inter = (right - left + 1).clamp(min=0) * (bottom - top + 1).clamp(min=0)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def ml_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices kept by label-wise greedy NMS, ascending (ml_nms.cu:80-140): boxes by descending score,
    a box suppresses later boxes of the SAME label whose IoU (+1) is strictly > threshold."""
    device = boxes.device
    boxes, scores, labels = boxes.cpu(), scores.cpu(), labels.cpu()  # a greedy loop: no device sync per box
    keep = []
    for label in labels.unique():
        members = (labels == label).nonzero().view(-1)
        order = members[torch.sort(scores[members], descending=True, stable=True).indices]
        iou = box_iou_plus_one(boxes[order].float(), boxes[order].float())
        suppressed = torch.zeros(len(order), dtype=torch.bool)
        for i in range(len(order)):
            if suppressed[i]:
                continue
            keep.append(order[i])
            suppressed |= iou[i] > threshold
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.sort(torch.stack(keep)).values.to(device)


def limit_detections(scores: torch.Tensor, limit: int) -> torch.Tensor:
    """Indices of the top `limit` by kthvalue, ties kept (select_over_all_levels, inference.py:747-768)."""
    count = scores.shape[0]
    if not count > limit > 0:
        return torch.arange(count, device=scores.device)
    threshold, _ = torch.kthvalue(scores.cpu().float(), count - limit + 1)
    return torch.nonzero(scores >= threshold.item()).squeeze(1)


def postprocess(config: GlipConfig, box_regression: list[torch.Tensor], centerness: list[torch.Tensor],
                dot_product_logits: list[torch.Tensor], anchors: list[torch.Tensor],
                positive_maps: list[dict[int, list[int]]], image_sizes: list[tuple[int, int]]) -> list[GlipDetections]:
    """Per-level lists over the batch: box_regression (B, 4, H, W), centerness (B, 1, H, W),
    dot_product_logits (B, H*W, T), anchors (H*W, 4); image_sizes (h, w) of the resized unpadded images."""
    coder = BoxCoder(config.box_coder_weights, config.bbox_xform_clip)
    results = []
    for b, (positive_map, size) in enumerate(zip(positive_maps, image_sizes)):
        check_positive_map(positive_map, config.num_classes, dot_product_logits[0].shape[-1])
        parts = [select_level(config, coder, reg[b], ctr[b], logit[b], anchor, positive_map, size)
                 for reg, ctr, logit, anchor in zip(box_regression, centerness, dot_product_logits, anchors)]
        boxes = torch.cat([p[0] for p in parts])
        scores = torch.cat([p[1] for p in parts])
        labels = torch.cat([p[2] for p in parts])
        if config.nms_th > 0:
            keep = ml_nms(boxes, scores, labels, config.nms_th)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = limit_detections(scores, config.detections_per_img)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        order = torch.sort(scores, descending=True, stable=True).indices
        results.append(GlipDetections(boxes[order], scores[order], labels[order]))
    return results
