"""Anchors and box coding with the legacy Detectron +1 arithmetic (microsoft/GLIP 9dda955:
maskrcnn_benchmark/modeling/rpn/anchor_generator.py:73-95, 157-181, 356-426; vldyhead.py:38-94)."""

from __future__ import annotations

import math

import numpy as np
import torch

from synground_assets.models.glip.config import GlipConfig


def _whctrs(anchor: np.ndarray) -> tuple[float, float, float, float]:
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws: np.ndarray, hs: np.ndarray, x_ctr: float, y_ctr: float) -> np.ndarray:
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1), x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))


def cell_anchors(stride: int, sizes: tuple[float, ...], aspect_ratios: tuple[float, ...]) -> torch.Tensor:
    """(len(ratios) * len(sizes), 4) base anchors of one level: the reference window (0, 0, stride-1,
    stride-1), ratio enumeration with np.round, then scale enumeration (anchor_generator.py:356-426);
    e.g. stride 8, size 64 -> (-28, -28, 35, 35). float64 maths like the official np.float, then float32."""
    scales = np.array(sizes, dtype=np.float64) / stride
    ratios = np.array(aspect_ratios, dtype=np.float64)
    anchor = np.array([1, 1, stride, stride], dtype=np.float64) - 1
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    ws = np.round(np.sqrt(w * h / ratios))
    hs = np.round(ws * ratios)
    by_ratio = _mkanchors(ws, hs, x_ctr, y_ctr)
    out = []
    for row in by_ratio:
        w, h, x_ctr, y_ctr = _whctrs(row)
        out.append(_mkanchors(w * scales, h * scales, x_ctr, y_ctr))
    return torch.from_numpy(np.vstack(out)).float()


def level_sizes(config: GlipConfig) -> list[tuple[float, ...]]:
    """Per-level anchor sizes with the octave scales (make_anchor_generator_complex, :157-181)."""
    return [tuple(config.octave ** (s / float(config.scales_per_octave)) * size
                  for s in range(config.scales_per_octave)) for size in config.anchor_sizes]


def all_cell_anchors(config: GlipConfig) -> list[torch.Tensor]:
    """What the official checkpoints store as `rpn.anchor_generator.cell_anchors.{0..4}`."""
    return [cell_anchors(stride, sizes, config.aspect_ratios)
            for stride, sizes in zip(config.anchor_strides, level_sizes(config))]


def grid_anchors(config: GlipConfig, grid_sizes: list[tuple[int, int]],
                 device: torch.device | None = None) -> list[torch.Tensor]:
    """Per level (H*W*A, 4): base anchors shifted by (x*stride, y*stride), row-major over (y, x)
    (anchor_generator.py:73-95)."""
    out = []
    for (height, width), stride, base in zip(grid_sizes, config.anchor_strides, all_cell_anchors(config)):
        base = base.to(device)
        shifts_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
        shifts_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
    return out


class BoxCoder:
    """vldyhead.py:38-94: widths with +1 (TO_REMOVE), weights (10, 10, 5, 5), dw/dh clamped at
    log(1000/16), corners at centre -+ (w' - 1) / 2."""

    def __init__(self, weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0), clip: float = math.log(1000.0 / 16)):
        self.weights, self.clip = weights, clip

    def encode(self, gt_boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        ex_w = anchors[:, 2] - anchors[:, 0] + 1
        ex_h = anchors[:, 3] - anchors[:, 1] + 1
        ex_x = (anchors[:, 2] + anchors[:, 0]) / 2
        ex_y = (anchors[:, 3] + anchors[:, 1]) / 2
        gt_w = gt_boxes[:, 2] - gt_boxes[:, 0] + 1
        gt_h = gt_boxes[:, 3] - gt_boxes[:, 1] + 1
        gt_x = (gt_boxes[:, 2] + gt_boxes[:, 0]) / 2
        gt_y = (gt_boxes[:, 3] + gt_boxes[:, 1]) / 2
        wx, wy, ww, wh = self.weights
        return torch.stack((wx * (gt_x - ex_x) / ex_w, wy * (gt_y - ex_y) / ex_h,
                            ww * torch.log(gt_w / ex_w), wh * torch.log(gt_h / ex_h)), dim=1)

    def decode(self, preds: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        anchors = anchors.to(preds.dtype)
        widths = anchors[:, 2] - anchors[:, 0] + 1
        heights = anchors[:, 3] - anchors[:, 1] + 1
        ctr_x = (anchors[:, 2] + anchors[:, 0]) / 2
        ctr_y = (anchors[:, 3] + anchors[:, 1]) / 2
        wx, wy, ww, wh = self.weights
        dx, dy = preds[:, 0::4] / wx, preds[:, 1::4] / wy
        dw = torch.clamp(preds[:, 2::4] / ww, max=self.clip)
        dh = torch.clamp(preds[:, 3::4] / wh, max=self.clip)
        pred_x = dx * widths[:, None] + ctr_x[:, None]
        pred_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]
        boxes = torch.zeros_like(preds)
        boxes[:, 0::4] = pred_x - 0.5 * (pred_w - 1)
        boxes[:, 1::4] = pred_y - 0.5 * (pred_h - 1)
        boxes[:, 2::4] = pred_x + 0.5 * (pred_w - 1)
        boxes[:, 3::4] = pred_y + 0.5 * (pred_h - 1)
        return boxes
