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
import torch.nn.functional as F
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


def sample_points(image: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """image (B, C, H, W), ys/xs (B, P, Q) pixel positions -> (B, C, P, Q) bilinear samples, every corner
    outside the image read as 0. That is dmcn_im2col_bilinear under its caller's `-1 < h < H and
    -1 < w < W` guard (kernel :476-503, :624): beyond the guard all four corners are outside, and on it
    (h = -1 or h = H) the inside corners weigh 0, so the guard changes nothing. Computed by grid_sample
    (zeros padding; align_corners=False, whose pixel centre x maps to (2x + 1) / W - 1, exact for W = 1);
    the normalisation round trip moves positions by float32 rounding only (~1e-6 relative)."""
    _, _, h, w = image.shape
    grid = torch.stack(((2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


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
    offset = flat_prefix(offset, 2 * k, out_h, out_w, "offset").reshape(b, k, 2, out_h, out_w)
    mask = flat_prefix(mask, k, out_h, out_w, "mask")
    dtype, device = image.dtype, image.device
    base_y = (torch.arange(out_h, device=device, dtype=dtype) * stride - padding).view(1, 1, out_h, 1)
    base_x = (torch.arange(out_w, device=device, dtype=dtype) * stride - padding).view(1, 1, 1, out_w)
    # Kernel point k = i * kw + j (row-major); offset channel 2k is dy, 2k+1 is dx.
    rows = (torch.arange(kh, device=device, dtype=dtype) * dilation).repeat_interleave(kw).view(1, k, 1, 1)
    cols = (torch.arange(kw, device=device, dtype=dtype) * dilation).repeat(kh).view(1, k, 1, 1)
    ys = (base_y + rows + offset[:, :, 0]).reshape(b, k * out_h, out_w)
    xs = (base_x + cols + offset[:, :, 1]).reshape(b, k * out_h, out_w)
    sampled = sample_points(image, ys, xs).view(b, cin, k, out_h * out_w) * mask.reshape(b, 1, k, out_h * out_w)
    # Columns in the kernel's (c, i, j) order against weight (Cout, Cin * K).
    out = torch.matmul(weight.reshape(cout, cin * k), sampled.reshape(b, cin * k, out_h * out_w))
    out = out.view(b, cout, out_h, out_w)
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
