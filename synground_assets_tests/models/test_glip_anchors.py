"""Anchors and box coding with the legacy +1 arithmetic (rpn/anchor_generator.py, vldyhead.py:38-94)."""

from __future__ import annotations

import math

import torch

from synground_assets.models.glip.anchors import BoxCoder, all_cell_anchors, cell_anchors, grid_anchors
from synground_assets.models.glip.config import glip_tiny


def test_cell_anchors_match_the_official_worked_example():
    # anchor_generator.py:326-353: stride 16, sizes (128, 256, 512), ratios (0.5, 1, 2), the MATLAB
    # reference in 1-based pixels; the Python code's reference window starts at 0, so every value is one less.
    matlab = torch.tensor([[-83.0, -39.0, 100.0, 56.0], [-175.0, -87.0, 192.0, 104.0],
                             [-359.0, -183.0, 376.0, 200.0], [-55.0, -55.0, 72.0, 72.0],
                             [-119.0, -119.0, 136.0, 136.0], [-247.0, -247.0, 264.0, 264.0],
                             [-35.0, -79.0, 52.0, 96.0], [-79.0, -167.0, 96.0, 184.0],
                             [-167.0, -343.0, 184.0, 360.0]])
    assert torch.equal(cell_anchors(16, (128, 256, 512), (0.5, 1.0, 2.0)), matlab - 1)


def test_glip_t_levels_are_centred_at_stride_minus_one_over_two():
    anchors = all_cell_anchors(glip_tiny())
    expected = [[-28.0, -28.0, 35.0, 35.0], [-56.0, -56.0, 71.0, 71.0], [-112.0, -112.0, 143.0, 143.0],
                [-224.0, -224.0, 287.0, 287.0], [-448.0, -448.0, 575.0, 575.0]]
    assert [a.squeeze(0).tolist() for a in anchors] == expected


def test_grid_anchors_shift_row_major_over_y_then_x():
    config = glip_tiny()
    level = grid_anchors(config, [(2, 3)] * 5)[0]
    assert level.shape == (6, 4)
    assert level[1].tolist() == [-20.0, -28.0, 43.0, 35.0]  # (y=0, x=1)
    assert level[3].tolist() == [-28.0, -20.0, 35.0, 43.0]  # (y=1, x=0)


def test_decode_uses_plus_one_widths_and_minus_one_corners():
    coder = BoxCoder()
    anchor = torch.tensor([[0.0, 0.0, 9.0, 19.0]])  # w 10, h 20, centre (4.5, 9.5)
    assert torch.equal(coder.decode(torch.zeros(1, 4), anchor), anchor)
    # dx = 1 / 10 of the +1 width 10 -> centre 5.5; dw = 5 log 2 / 5 -> width 20: x = 5.5 -+ (20 - 1) / 2.
    out = coder.decode(torch.tensor([[1.0, 0.0, 5 * math.log(2.0), 0.0]]), anchor)
    torch.testing.assert_close(out, torch.tensor([[-4.0, 0.0, 15.0, 19.0]]))


def test_decode_clamps_dw_dh_at_log_1000_over_16():
    coder = BoxCoder()
    anchor = torch.tensor([[0.0, 0.0, 15.0, 15.0]])  # 16 x 16
    out = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchor)
    width = out[0, 2] - out[0, 0] + 1
    torch.testing.assert_close(width, torch.tensor(1000.0))


def test_encode_inverts_decode():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 31.0, 31.0], [10.0, 20.0, 73.0, 50.0]])
    boxes = torch.tensor([[3.0, 4.0, 40.0, 22.0], [0.0, 25.0, 60.0, 99.0]])
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes)
