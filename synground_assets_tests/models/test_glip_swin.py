"""Swin pieces that are easy to get wrong: the shifted-window mask, the relative position index, patch
merging's order and padding, the stage-0 output without norm (backbone/swint.py)."""

from __future__ import annotations

import torch

from synground_assets.models.glip.config import glip_tiny
from synground_assets.models.glip.swin import (
    PatchMerging,
    SwinTransformer,
    relative_position_index,
    shifted_window_mask,
)


def hand_region(coord: int, padded: int, window: int, shift: int) -> int:
    """Region of one coordinate along an axis: [0, P-w) -> 0, [P-w, P-s) -> 1, [P-s, P) -> 2."""
    if coord < padded - window:
        return 0
    return 1 if coord < padded - shift else 2


def test_shifted_window_mask_on_a_padded_grid_matches_the_hand_built_regions():
    # 5 x 7 map, window 3, shift 1 -> padded 6 x 9, 2 x 3 windows of 9 tokens.
    window, shift = 3, 1
    mask = shifted_window_mask(5, 7, window, shift)
    assert mask.shape == (6, 9, 9)
    hp, wp = 6, 9
    for wi in range(2):
        for wj in range(3):
            tokens = [(wi * window + a, wj * window + b) for a in range(window) for b in range(window)]
            regions = [hand_region(y, hp, window, shift) * 3 + hand_region(x, wp, window, shift) for y, x in tokens]
            expected = torch.tensor([[0.0 if r1 == r2 else -100.0 for r2 in regions] for r1 in regions])
            assert torch.equal(mask[wi * 3 + wj], expected)
    # Only the last row/column of windows mixes regions.
    assert torch.all(mask[0] == 0) and torch.any(mask[-1] == -100.0)


def test_last_window_of_a_7x7_mask_has_the_known_block_pattern():
    mask = shifted_window_mask(7, 7, 7, 3)  # one window covering the three regions per axis
    regions = [(0 if y < 4 else 1) * 3 + (0 if x < 4 else 1) for y in range(7) for x in range(7)]
    expected = torch.tensor([[0.0 if a == b else -100.0 for b in regions] for a in regions])
    assert torch.equal(mask[0], expected)


def test_relative_position_index_is_the_flattened_offset_pair():
    window = 3
    index = relative_position_index(window)
    for p in range(window * window):
        for q in range(window * window):
            (y1, x1), (y2, x2) = divmod(p, window), divmod(q, window)
            assert index[p, q] == (y1 - y2 + window - 1) * (2 * window - 1) + (x1 - x2 + window - 1)


def test_patch_merging_concatenates_00_10_01_11_and_pads_odd_sizes():
    merge = PatchMerging(1, eps=1e-5)
    with torch.no_grad():
        merge.norm.weight.fill_(1.0)
        merge.norm.bias.zero_()
        merge.reduction.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    # 3 x 3 map of values 10*y + x: padded to 4 x 4 with zeros.
    x = torch.tensor([[10.0 * y + xx for xx in range(3)] for y in range(3)]).view(1, 9, 1)
    captured = {}
    merge.norm.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0]))
    out = merge(x, 3, 3)
    assert out.shape == (1, 4, 2)
    cells = captured["x"].view(2, 2, 4)
    assert cells[0, 0].tolist() == [0.0, 10.0, 1.0, 11.0]  # (0,0), (1,0), (0,1), (1,1)
    assert cells[1, 1].tolist() == [22.0, 0.0, 0.0, 0.0]  # zero padding beyond the odd edge


def test_stage_sizes_padding_and_stage0_without_norm():
    config = glip_tiny(swin_embed_dim=8, swin_depths=(1, 2, 1, 1), swin_heads=(1, 1, 2, 2), swin_window_size=3)
    torch.manual_seed(0)
    body = SwinTransformer(config).eval()
    outs = body(torch.randn(1, 3, 50, 38))  # 50 x 38 -> padded to 52 x 40 -> 13 x 10
    assert [tuple(o.shape) for o in outs] == [(1, 8, 13, 10), (1, 16, 7, 5), (1, 32, 4, 3), (1, 64, 2, 2)]
    assert isinstance(body.norm0, torch.nn.Identity)
    assert not any(name.startswith("norm0") for name, _ in body.named_parameters())
    # Stage 0 un-normalised: its channels are not zero-mean per position as a LayerNorm output would be.
    assert outs[0].mean(dim=1).abs().max() > 1e-3
    assert outs[1].mean(dim=1).abs().max() < 1e-4
