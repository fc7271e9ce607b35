"""The VL-DyHead's pieces (rpn/vldyhead.py, utils/fuse_helper.py, rpn/modeling_bert.py, layers/dyrelu.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from synground_assets.models.glip.config import glip_tiny, glip_tiny_a
from synground_assets.models.glip.deform import modulated_deform_conv2d
from synground_assets.models.glip.dyhead import (
    BertEncoderLayer,
    BiAttentionBlock,
    DummyLayer,
    DyConv,
    DYReLU,
    VLDyHead,
    h_sigmoid,
)

SMALL = dict(fpn_channels=16, dyhead_channels=16, group_norm_groups=4, dyhead_num_convs=2, text_hidden_size=8,
             text_heads=2, text_intermediate_size=12, fuse_embed_dim=8, fuse_heads=2, max_query_len=6)


def levels(batch=1, channels=16, sizes=((8, 6), (4, 3), (2, 2), (1, 1), (1, 1))):
    return [torch.randn(batch, channels, h, w) for h, w in sizes]


def test_h_sigmoid_and_dyrelu_follow_the_official_formulas():
    torch.testing.assert_close(h_sigmoid(torch.tensor([-4.0, 0.0, 1.5, 4.0])), torch.tensor([0.0, 0.5, 0.75, 1.0]))
    torch.manual_seed(0)
    relu = DYReLU(8, 4)
    x = torch.randn(2, 8, 3, 3)
    y = h_sigmoid(relu.fc(x.mean(dim=(2, 3))))
    a1, b1, a2, b2 = (y[:, i * 8:(i + 1) * 8, None, None] for i in range(4))
    expected = torch.max(x * ((a1 - 0.5) * 2 + 1) + (b1 - 0.5), x * ((a2 - 0.5) * 2) + (b2 - 0.5))
    torch.testing.assert_close(relu(x), expected)


def test_fusion_adds_its_residual_to_the_normalised_inputs_and_masks_only_image_to_text():
    torch.manual_seed(1)
    config = glip_tiny(**SMALL)
    block = BiAttentionBlock(config).eval()
    v, lang = torch.randn(1, 10, 16) * 5 + 3, torch.randn(1, 6, 8) * 4 - 2
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        new_v, new_l = block(v, lang, mask)
        # Padded tokens do not reach the image...
        changed = lang.clone()
        changed[:, 4:] += 100.0
        new_v2, new_l2 = block(v, changed, mask)
        torch.testing.assert_close(new_v2, new_v)
        # ...and every token, padded or not, attends to the image (no visual mask): padded outputs move.
        assert not torch.allclose(new_l2[:, 4:], F.layer_norm(changed, (8,))[:, 4:])
        # Zero out-projections: outputs are exactly the LayerNorm-ed inputs (residual on normalised inputs).
        block.attn.out_v_proj.weight.zero_()
        block.attn.out_v_proj.bias.zero_()
        block.attn.out_l_proj.weight.zero_()
        block.attn.out_l_proj.bias.zero_()
        v0, l0 = block(v, lang, mask)
    torch.testing.assert_close(v0, F.layer_norm(v, (16,)))
    torch.testing.assert_close(l0, F.layer_norm(lang, (8,)))
    assert torch.allclose(block.gamma_v, torch.full((16,), 0.5))  # 1 / NUM_CONVS


def test_bert_encoder_layer_equals_transformers_bert_layer_within_the_clamps():
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    torch.manual_seed(2)
    config = glip_tiny(**SMALL)
    ours = BertEncoderLayer(config).eval()
    bert_config = BertConfig(hidden_size=8, num_attention_heads=2, intermediate_size=12, hidden_act="gelu",
                             layer_norm_eps=1e-12)
    bert_config._attn_implementation = "eager"
    theirs = BertLayer(bert_config).eval()
    theirs.load_state_dict(ours.state_dict())  # same names: attention.self.query, ..., output.LayerNorm
    hidden, mask = torch.randn(2, 6, 8), torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    extended = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    with torch.no_grad():
        expected = theirs(hidden, attention_mask=extended)
        expected = expected[0] if isinstance(expected, tuple) else expected
        got = ours({"hidden": hidden, "masks": mask, "visual": []})["hidden"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Huge activations are clamped at +-50000 after the intermediate dense (modeling_bert.py:251-256).
    with torch.no_grad():
        ours.intermediate.dense.bias.fill_(1e6)
        out = ours.intermediate(hidden)
    assert out.max() == 50000.0


def test_dyconv_combines_three_branches_with_the_flat_prefix_offsets_and_align_corners_upsampling():
    torch.manual_seed(3)
    config = glip_tiny(**SMALL)
    conv = DyConv(config).eval()
    with torch.no_grad():
        for module in conv.modules():
            if hasattr(module, "weight") and module.weight is not None and module.weight.dim() == 4:
                module.weight.normal_(0, 0.2)
        visual = levels()
        out = conv({"visual": visual, "hidden": None, "masks": None})["visual"]
        level = 1  # has a finer (stride-2) and a coarser (flat-prefix, upsampled) neighbour
        feature = visual[level]
        offset_mask = conv.offset(feature)
        offset, mask = offset_mask[:, :18], offset_mask[:, 18:].sigmoid()

        def branch(index, x, stride):
            module = conv.DyConv[index]
            y = modulated_deform_conv2d(x, offset, mask, module.conv.weight, module.conv.bias, stride, 1)
            return module.bn(y)

        coarse = branch(0, visual[2], 1)
        assert coarse.shape[-2:] == (2, 2)
        branches = [branch(1, feature, 1), branch(2, visual[0], 2),
                    F.interpolate(coarse, size=(4, 3), mode="bilinear", align_corners=True)]
        weights = [h_sigmoid(conv.AttnConv(b)) for b in branches]
        expected = conv.relu(sum(b * w for b, w in zip(branches, weights)) / 3)
    torch.testing.assert_close(out[level], expected, atol=1e-5, rtol=1e-5)


def test_tower_layout_with_and_without_early_fusion():
    fused = VLDyHead(glip_tiny(**SMALL))
    assert [type(m).__name__ for m in fused.dyhead_tower] == ["VLFuse", "BertEncoderLayer", "DyConv"] * 2
    plain = VLDyHead(glip_tiny_a(**SMALL))
    assert [type(m).__name__ for m in plain.dyhead_tower] == ["DyConv", "DyConv"]
    dummy = VLDyHead(glip_tiny(use_fused_features_dot_product=False, **SMALL))
    assert isinstance(dummy.dyhead_tower[4], DummyLayer)


def test_dot_product_logits_normalise_halve_project_scale_and_bias():
    torch.manual_seed(4)
    config = glip_tiny_a(**SMALL)  # no fusion: the dot product uses BERT's `embedded`
    head = VLDyHead(config).eval()
    with torch.no_grad():
        head.bias_lang.normal_()
        head.log_scale.fill_(0.7)
        visual = levels(batch=2)
        embedded = torch.randn(2, 6, 8)
        mask = torch.ones(2, 6, dtype=torch.long)
        box, center, logits = head(visual, embedded * 3, embedded, mask)
        tower = head.dyhead_tower({"visual": visual, "hidden": embedded * 3, "masks": mask})["visual"]
        unit = embedded / embedded.norm(dim=-1, keepdim=True)
        proj = unit / 2.0 @ head.dot_product_projection_text.weight.T + head.dot_product_projection_text.bias
        bias = unit @ head.bias_lang + head.bias0
        queries = tower[0].flatten(2).transpose(1, 2)  # (B, H*W, C), row-major
        expected = queries @ proj.transpose(1, 2) / torch.exp(torch.tensor(0.7)) + bias[:, None, :]
    assert [tuple(x.shape) for x in logits] == [(2, 48, 6), (2, 12, 6), (2, 4, 6), (2, 1, 6), (2, 1, 6)]
    torch.testing.assert_close(logits[0], expected, atol=1e-5, rtol=1e-5)
    assert [tuple(x.shape) for x in box] == [(2, 4, 8, 6), (2, 4, 4, 3), (2, 4, 2, 2), (2, 4, 1, 1), (2, 4, 1, 1)]
    assert tuple(center[0].shape) == (2, 1, 8, 6)
