"""The pure-PyTorch modulated deformable convolution against a direct per-point reference written from
the CUDA kernel's text (deform_conv_kernel_cuda.cu:475-503, 590-634), at the borders and with the
flat-prefix offsets GLIP's coarser-level branch uses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from synground_assets.models.glip.deform import flat_prefix, modulated_deform_conv2d


def corner_value(image, c, y, x):
    h, w = image.shape[1:]
    return float(image[c, y, x]) if 0 <= y <= h - 1 and 0 <= x <= w - 1 else 0.0


def reference_sample(image, c, h_im, w_im):
    """dmcn_im2col_bilinear guarded by -1 < h < H and -1 < w < W, one point at a time."""
    height, width = image.shape[1:]
    if not (h_im > -1 and w_im > -1 and h_im < height and w_im < width):
        return 0.0
    h_low, w_low = math.floor(h_im), math.floor(w_im)
    lh, lw = h_im - h_low, w_im - w_low
    hh, hw = 1 - lh, 1 - lw
    return (hh * hw * corner_value(image, c, h_low, w_low) + hh * lw * corner_value(image, c, h_low, w_low + 1)
            + lh * hw * corner_value(image, c, h_low + 1, w_low)
            + lh * lw * corner_value(image, c, h_low + 1, w_low + 1))


def reference_deform(image, offset_flat, mask_flat, weight, bias, stride, out_h, out_w):
    """One image; offset_flat / mask_flat are the raw per-image buffers indexed with the OUTPUT size."""
    cout, cin = weight.shape[:2]
    out = torch.zeros(cout, out_h, out_w, dtype=torch.float64)
    for y in range(out_h):
        for x in range(out_w):
            for i in range(3):
                for j in range(3):
                    k = i * 3 + j
                    dy = float(offset_flat[((2 * k) * out_h + y) * out_w + x])
                    dx = float(offset_flat[((2 * k + 1) * out_h + y) * out_w + x])
                    m = float(mask_flat[(k * out_h + y) * out_w + x])
                    for c in range(cin):
                        value = reference_sample(image, c, y * stride - 1 + i + dy, x * stride - 1 + j + dx) * m
                        out[:, y, x] += weight[:, c, i, j].double() * value
    return out + bias.double().view(-1, 1, 1)


@pytest.mark.parametrize("stride", [1, 2])
def test_matches_the_per_point_reference_with_samples_across_every_border(stride):
    torch.manual_seed(0)
    image = torch.randn(2, 3, 5, 6)
    out_h = (5 + 2 - 3) // stride + 1
    out_w = (6 + 2 - 3) // stride + 1
    # Large offsets put many samples outside, on the -1 / H boundaries and between.
    offset = torch.randn(2, 18, out_h, out_w) * 2.5
    offset[0, 0, 0, 0] = -1.0  # exactly on h = -1: outside
    offset[0, 1, 0, 1] = -0.5
    mask = torch.rand(2, 9, out_h, out_w)
    weight, bias = torch.randn(4, 3, 3, 3), torch.randn(4)
    got = modulated_deform_conv2d(image, offset, mask, weight, bias, stride=stride, padding=1)
    for b in range(2):
        expected = reference_deform(image[b], offset[b].reshape(-1), mask[b].reshape(-1), weight, bias, stride,
                                    out_h, out_w)
        torch.testing.assert_close(got[b].double(), expected, atol=1e-4, rtol=1e-4)


def test_zero_offsets_and_unit_mask_are_a_plain_convolution():
    torch.manual_seed(1)
    image = torch.randn(1, 4, 7, 5)
    weight, bias = torch.randn(3, 4, 3, 3), torch.randn(3)
    for stride in (1, 2):
        expected = F.conv2d(image, weight, bias, stride=stride, padding=1)
        h, w = expected.shape[-2:]
        got = modulated_deform_conv2d(image, torch.zeros(1, 18, h, w), torch.ones(1, 9, h, w), weight, bias,
                                      stride=stride, padding=1)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_larger_offset_map_is_read_as_its_per_image_flat_prefix():
    """GLIP's DyConv[0]: level l+1 (3x4 output) with the offsets of level l (6x8): the kernel reads the
    first 18*3*4 values of each image's offset buffer, not a resampled or cropped map."""
    torch.manual_seed(2)
    coarse = torch.randn(2, 2, 3, 4)
    offset_mask = torch.randn(2, 27, 6, 8)
    offset = offset_mask[:, :18]  # a channel slice, as vldyhead.py:203 takes it
    mask = offset_mask[:, 18:].sigmoid()
    weight, bias = torch.randn(2, 2, 3, 3), torch.randn(2)
    got = modulated_deform_conv2d(coarse, offset, mask, weight, bias, stride=1, padding=1)
    assert got.shape == (2, 2, 3, 4)
    for b in range(2):
        raw_offset = offset_mask[b].reshape(-1)[: 18 * 6 * 8]  # the raw memory behind offset[b]
        raw_mask = mask[b].reshape(-1)
        expected = reference_deform(coarse[b], raw_offset, raw_mask, weight, bias, 1, 3, 4)
        torch.testing.assert_close(got[b].double(), expected, atol=1e-4, rtol=1e-4)
    cropped = modulated_deform_conv2d(coarse, offset[:, :, :3, :4], mask[:, :, :3, :4], weight, bias)
    assert not torch.allclose(cropped, got), "cropping the offsets is not the official behaviour"


def test_flat_prefix_keeps_matching_sizes_and_refuses_smaller_maps():
    values = torch.arange(2 * 18 * 4 * 4, dtype=torch.float32).view(2, 18, 4, 4)
    assert flat_prefix(values, 18, 4, 4, "offset") is values
    prefix = flat_prefix(values, 18, 2, 2, "offset")
    assert torch.equal(prefix[1].reshape(-1), values[1].reshape(-1)[: 18 * 4])
    with pytest.raises(ValueError, match="smaller than the 5x5 output"):
        flat_prefix(values, 18, 5, 5, "offset")
    with pytest.raises(ValueError, match="offset has 18 channels, expected 9"):
        flat_prefix(values, 9, 4, 4, "offset")


def test_same_semantics_as_torchvision_deform_conv2d_where_sizes_match():
    ops = pytest.importorskip("torchvision.ops")
    torch.manual_seed(3)
    image = torch.randn(2, 3, 6, 7)
    offset = torch.randn(2, 18, 6, 7) * 2
    mask = torch.rand(2, 9, 6, 7)
    weight, bias = torch.randn(4, 3, 3, 3), torch.randn(4)
    expected = ops.deform_conv2d(image, offset, weight, bias, padding=1, mask=mask)
    got = modulated_deform_conv2d(image, offset, mask, weight, bias, stride=1, padding=1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
