"""Modulated deformable 3x3 convolution (DCNv2) in plain PyTorch, as GLIP's compiled CUDA kernel computes it
(maskrcnn_benchmark/csrc/cuda/deform_conv_kernel_cuda.cu:475-503, 590-634, deform_conv_cuda.cu:496-570).

Conventions: kernel point k = i * kw + j (row-major); offset channel 2k is dy, 2k+1 is dx; mask channel k;
output (y, x) samples the input at (y * stride - pad + i * dil + dy, x * stride - pad + j * dil + dx);
the value is 0 unless -1 < h < H and -1 < w < W, bilinear with every out-of-range corner read as 0,
then multiplied by the mask. Same layout as torchvision.ops.deform_conv2d.

The flat-prefix view: the kernel reads the per-image offset (mask) buffer as raw memory laid out for
the OUTPUT's height and width (`offset[b]` is passed as a pointer, deform_conv_cuda.cu:545-548, indexed
with height_col/width_col, deform_conv_kernel_cuda.cu:607-620). GLIP's DyConv[0] branch convolves the
coarser level l+1 with the offsets of level l, which are larger than its output; the kernel then uses
the first 2*K*Ho*Wo (K*Ho*Wo) values of the flattened per-image offset (mask). `flat_prefix` does that.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def flat_prefix(values: torch.Tensor, channels: int, out_h: int, out_w: int, name: str) -> torch.Tensor:
    """(B, channels, H, W) -> (B, channels, out_h, out_w): the per-image flat prefix when the map is
    larger than the output (the CUDA kernel's raw-memory read), unchanged when the sizes match."""
    b, c, h, w = values.shape
    if c != channels:
        raise ValueError(f"{name} has {c} channels, expected {channels}")
    if (h, w) == (out_h, out_w):
        return values
    if h * w < out_h * out_w:
        raise ValueError(f"{name} is {h}x{w}, smaller than the {out_h}x{out_w} output: the official kernel "
                         "would read past the buffer")
    # reshape(B, -1) flattens each image in (channel, y, x) order: for a channel slice of a
    # per-image contiguous tensor (offset_mask[:, :18]) this is exactly the raw memory the kernel reads.
    return values.reshape(b, -1)[:, : channels * out_h * out_w].reshape(b, channels, out_h, out_w)


def bilinear_zero_outside(image: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """image (B, C, H, W), ys/xs (B, N) float sample positions -> (B, C, N).
    dmcn_im2col_bilinear with the caller's `-1 < h < H and -1 < w < W` rule (kernel :476-503, :624)."""
    b, c, h, w = image.shape
    inside = (ys > -1) & (xs > -1) & (ys < h) & (xs < w)
    y0 = torch.floor(ys)
    x0 = torch.floor(xs)
    ly, lx = ys - y0, xs - x0
    hy, hx = 1 - ly, 1 - lx
    y0, x0 = y0.long(), x0.long()
    y1, x1 = y0 + 1, x0 + 1
    flat = image.reshape(b, c, h * w)
    out = image.new_zeros(b, c, ys.shape[1])
    for yy, xx, weight in ((y0, x0, hy * hx), (y0, x1, hy * lx), (y1, x0, ly * hx), (y1, x1, ly * lx)):
        valid = inside & (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
        index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(1).expand(b, c, -1)
        corner = torch.gather(flat, 2, index)
        out += corner * (weight * valid.to(image.dtype)).unsqueeze(1)
    return out


def modulated_deform_conv2d(image: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None, stride: int = 1, padding: int = 1,
                            dilation: int = 1) -> torch.Tensor:
    """image (B, Cin, H, W), offset (B, 2K, >=Ho, >=Wo), mask (B, K, >=Ho, >=Wo), weight (Cout, Cin, kh, kw)."""
    b, cin, h, w = image.shape
    cout, wcin, kh, kw = weight.shape
    if wcin != cin:
        raise ValueError(f"input has {cin} channels but the weight expects {wcin} (groups are not supported)")
    out_h = (h + 2 * padding - (dilation * (kh - 1) + 1)) // stride + 1
    out_w = (w + 2 * padding - (dilation * (kw - 1) + 1)) // stride + 1
    k = kh * kw
    offset = flat_prefix(offset, 2 * k, out_h, out_w, "offset")
    mask = flat_prefix(mask, k, out_h, out_w, "mask")
    base_y = (torch.arange(out_h, device=image.device, dtype=image.dtype) * stride - padding).view(out_h, 1)
    base_x = (torch.arange(out_w, device=image.device, dtype=image.dtype) * stride - padding).view(1, out_w)
    columns = []
    for i in range(kh):
        for j in range(kw):
            point = i * kw + j
            ys = (base_y + i * dilation + offset[:, 2 * point]).reshape(b, -1)
            xs = (base_x + j * dilation + offset[:, 2 * point + 1]).reshape(b, -1)
            sampled = bilinear_zero_outside(image, ys, xs)
            columns.append(sampled * mask[:, point].reshape(b, 1, -1))
    # (B, Cin, K, N) against weight (Cout, Cin * K) in the kernel's (c, i, j) column order.
    cols = torch.stack(columns, dim=2).reshape(b, cin * k, out_h * out_w)
    out = torch.matmul(weight.reshape(cout, cin * k), cols).view(b, cout, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class ModulatedDeformConv(nn.Module):
    """`weight` (Cout, Cin, 3, 3) and `bias`, as mb/layers/deform_conv.py:333-382 (groups 1,
    deformable_groups 1); computed in float32 like its `custom_fwd(cast_inputs=torch.float32)`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        out = modulated_deform_conv2d(x.float(), offset.float(), mask.float(), self.weight.float(),
                                      self.bias.float(), self.stride, self.padding)
        return out.to(dtype)
