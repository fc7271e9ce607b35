"""GLIP's VL-DyHead (microsoft/GLIP 9dda955, maskrcnn_benchmark/modeling/rpn/vldyhead.py:141-287, 342-860,
utils/fuse_helper.py:171-430, layers/dyrelu.py, rpn/modeling_bert.py): a tower of NUM_CONVS x
[VLFuse (MHA-B), BertEncoderLayer, DyConv] (without early fusion: DyConvs only), then per-level box
regression, centerness and dot-product token logits. Module names follow the official ones, so the
state dict keys are `rpn.head.*` of the official checkpoints once prefixed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synground_assets.models.glip.config import GlipConfig
from synground_assets.models.glip.deform import ModulatedDeformConv

MASKED_TEXT = -9e15  # fuse_helper.py:265


def h_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """relu6(x + 3) / 6 (vldyhead.py:28-36, dyrelu.py:29-36)."""
    return F.relu6(x + 3) / 6


def permute_and_flatten(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C), row-major over (H, W) (modeling/utils.py permute_and_flatten, A=1)."""
    b, c, h, w = x.shape
    return x.view(b, 1, c, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, c)


class BiMultiHeadAttention(nn.Module):
    """fuse_helper.py:171-333 with STABLE_SOFTMAX_2D False and both CLAMP_* True."""

    def __init__(self, v_dim: int, l_dim: int, embed_dim: int, heads: int, clamp: float):
        super().__init__()
        self.heads, self.head_dim, self.embed_dim, self.clamp = heads, embed_dim // heads, embed_dim, clamp
        self.scale = self.head_dim ** -0.5
        self.v_proj = nn.Linear(v_dim, embed_dim)
        self.l_proj = nn.Linear(l_dim, embed_dim)
        self.values_v_proj = nn.Linear(v_dim, embed_dim)
        self.values_l_proj = nn.Linear(l_dim, embed_dim)
        self.out_v_proj = nn.Linear(embed_dim, v_dim)
        self.out_l_proj = nn.Linear(embed_dim, l_dim)
        for linear in (self.v_proj, self.l_proj, self.values_v_proj, self.values_l_proj, self.out_v_proj,
                       self.out_l_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def _shape(self, x: torch.Tensor, b: int) -> torch.Tensor:
        return x.view(b, -1, self.heads, self.head_dim).transpose(1, 2).contiguous().view(b * self.heads, -1,
                                                                                          self.head_dim)

    def forward(self, v: torch.Tensor, lang: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n_v, _ = v.shape
        n_l = lang.shape[1]
        query = self._shape(self.v_proj(v) * self.scale, b)
        key = self._shape(self.l_proj(lang), b)
        value_v = self._shape(self.values_v_proj(v), b)
        value_l = self._shape(self.values_l_proj(lang), b)
        weights = torch.bmm(query, key.transpose(1, 2))  # (B*h, Nv, Nl)
        weights = weights.clamp(min=-self.clamp, max=self.clamp)  # fuse_helper.py:246-249
        # Text-to-image: subtract the row max, clamp, softmax over ALL visual positions (:250-258).
        weights_t = weights.transpose(1, 2)
        weights_l = (weights_t - weights_t.max(dim=-1, keepdim=True)[0]).clamp(min=-self.clamp, max=self.clamp)
        probs_l = weights_l.softmax(dim=-1)
        # Image-to-text: the raw mask with its zeros replaced by -9e15 is ADDED, so valid tokens get +1
        # (softmax-invariant; kept as the official code does, :260-273).
        added = mask.to(weights.dtype).masked_fill(mask == 0, MASKED_TEXT)
        weights = (weights.view(b, self.heads, n_v, n_l) + added[:, None, None, :]).view(b * self.heads, n_v, n_l)
        probs_v = weights.softmax(dim=-1)
        out_v = torch.bmm(probs_v, value_l).view(b, self.heads, n_v, self.head_dim).transpose(1, 2)
        out_l = torch.bmm(probs_l, value_v).view(b, self.heads, n_l, self.head_dim).transpose(1, 2)
        return (self.out_v_proj(out_v.reshape(b, n_v, self.embed_dim)),
                self.out_l_proj(out_l.reshape(b, n_l, self.embed_dim)))


class BiAttentionBlock(nn.Module):
    """BiAttentionBlockForCheckpoint (fuse_helper.py:375-430): pre-LayerNorm on both inputs and the
    residual added to the NORMALISED inputs, scaled by gamma (init 1/NUM_CONVS)."""

    def __init__(self, config: GlipConfig):
        super().__init__()
        v_dim, l_dim = config.dyhead_channels, config.text_hidden_size
        self.layer_norm_v = nn.LayerNorm(v_dim)
        self.layer_norm_l = nn.LayerNorm(l_dim)
        self.attn = BiMultiHeadAttention(v_dim, l_dim, config.fuse_embed_dim, config.fuse_heads, config.clamp_value)
        init = 1.0 / config.dyhead_num_convs
        self.gamma_v = nn.Parameter(init * torch.ones(v_dim))
        self.gamma_l = nn.Parameter(init * torch.ones(l_dim))

    def forward(self, v: torch.Tensor, lang: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.layer_norm_v(v)
        lang = self.layer_norm_l(lang)
        delta_v, delta_l = self.attn(v, lang, mask)
        return v + self.gamma_v * delta_v, lang + self.gamma_l * delta_l


class VLFuse(nn.Module):
    """MHA-B early fusion over all levels flattened and concatenated P3..P7 (fuse_helper.py:398-414)."""

    def __init__(self, config: GlipConfig):
        super().__init__()
        self.b_attn = BiAttentionBlock(config)

    def forward(self, state: dict) -> dict:
        visual = state["visual"]
        sizes = [feature.shape[-2:] for feature in visual]
        flat = torch.cat([permute_and_flatten(feature) for feature in visual], dim=1)
        new_v, new_l = self.b_attn(flat, state["hidden"], state["masks"])
        new_v = new_v.transpose(1, 2).contiguous()
        out, start = [], 0
        for h, w in sizes:
            out.append(new_v[:, :, start:start + h * w].view(new_v.shape[0], -1, h, w).contiguous())
            start += h * w
        return {**state, "visual": out, "hidden": new_l}


class BertSelfAttention(nn.Module):
    def __init__(self, config: GlipConfig):
        super().__init__()
        self.heads = config.text_heads
        self.head_size = config.text_hidden_size // config.text_heads
        self.clamp = config.clamp_value
        self.query = nn.Linear(config.text_hidden_size, config.text_hidden_size)
        self.key = nn.Linear(config.text_hidden_size, config.text_hidden_size)
        self.value = nn.Linear(config.text_hidden_size, config.text_hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_size).permute(0, 2, 1, 3)

    def forward(self, hidden: torch.Tensor, extended_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(hidden)), self._heads(self.value(hidden))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)
        scores = scores.clamp(min=-self.clamp, max=self.clamp)  # before the mask (modeling_bert.py:139-146)
        probs = (scores + extended_mask).softmax(dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return context.view(context.shape[0], context.shape[1], -1)


class BertSelfOutput(nn.Module):
    def __init__(self, config: GlipConfig):
        super().__init__()
        self.dense = nn.Linear(config.text_hidden_size, config.text_hidden_size)
        self.LayerNorm = nn.LayerNorm(config.text_hidden_size, eps=config.text_layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: GlipConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden: torch.Tensor, extended_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, extended_mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config: GlipConfig):
        super().__init__()
        self.dense = nn.Linear(config.text_hidden_size, config.text_intermediate_size)
        if config.text_hidden_act != "gelu":
            raise ValueError(f"text_hidden_act {config.text_hidden_act!r}: only BERT's erf 'gelu' is supported")
        self.clamp = config.clamp_value

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # clamp, GELU (erf), clamp (modeling_bert.py:251-256)
        hidden = self.dense(hidden).clamp(min=-self.clamp, max=self.clamp)
        return F.gelu(hidden).clamp(min=-self.clamp, max=self.clamp)


class BertOutput(nn.Module):
    def __init__(self, config: GlipConfig):
        super().__init__()
        self.dense = nn.Linear(config.text_intermediate_size, config.text_hidden_size)
        self.LayerNorm = nn.LayerNorm(config.text_hidden_size, eps=config.text_layer_norm_eps)
        self.clamp = config.clamp_value

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        hidden = self.dense(hidden).clamp(min=-self.clamp, max=self.clamp)  # modeling_bert.py:266-271
        return self.LayerNorm(hidden + residual).clamp(min=-self.clamp, max=self.clamp)


class BertEncoderLayer(nn.Module):
    """vldyhead.py:236-287 with GLIP's clamped BERT copy (rpn/modeling_bert.py); updates the language
    `hidden` only. The extended mask is transformers' (1 - mask) * finfo.min."""

    def __init__(self, config: GlipConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, state: dict) -> dict:
        hidden, mask = state["hidden"], state["masks"]
        extended = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        attended = self.attention(hidden, extended)
        return {**state, "hidden": self.output(self.intermediate(attended), attended)}


class DummyLayer(nn.Module):
    """The last BertEncoderLayer when USE_FUSED_FEATURES_DOT_PRODUCT is False (vldyhead.py:342-347)."""

    def forward(self, state: dict) -> dict:
        return state


class Conv3x3Norm(nn.Module):
    """Deformable 3x3 conv + GroupNorm named `bn` (vldyhead.py:97-138)."""

    def __init__(self, channels: int, stride: int, groups: int, eps: float):
        super().__init__()
        self.conv = ModulatedDeformConv(channels, channels, 3, stride=stride, padding=1)
        self.bn = nn.GroupNorm(groups, channels, eps=eps)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x, offset, mask))


class DYReLU(nn.Module):
    """layers/dyrelu.py:39-120 with K2, bias, lambda_a 2, init_a (1, 0), init_b (0, 0)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.channels = channels
        squeeze = channels // reduction
        self.fc = nn.Sequential(nn.Linear(channels, squeeze), nn.ReLU(inplace=True),
                                nn.Linear(squeeze, channels * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        y = h_sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1).view(b, c))).view(b, 4 * c, 1, 1)
        a1, b1, a2, b2 = torch.split(y, self.channels, dim=1)
        a1 = (a1 - 0.5) * 2.0 + 1.0
        a2 = (a2 - 0.5) * 2.0 + 0.0
        b1 = b1 - 0.5 + 0.0
        b2 = b2 - 0.5 + 0.0
        return torch.max(x * a1 + b1, x * a2 + b2)


class DyConv(nn.Module):
    """vldyhead.py:141-233: per level l, offsets/mask from level l; DyConv[1] on l (stride 1), DyConv[2] on
    l-1 (stride 2), DyConv[0] on l+1 (stride 1, then bilinear align_corners=True up to l's size; its
    offsets are level l's read as a flat prefix, see deform.py); each branch weighted by
    h_sigmoid(relu(conv1x1(avgpool))) and averaged; then DyReLU."""

    def __init__(self, config: GlipConfig):
        super().__init__()
        channels = config.dyhead_channels
        groups, eps = config.group_norm_groups, config.group_norm_eps
        self.DyConv = nn.ModuleList([Conv3x3Norm(channels, 1, groups, eps), Conv3x3Norm(channels, 1, groups, eps),
                                     Conv3x3Norm(channels, 2, groups, eps)])
        self.AttnConv = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, 1, kernel_size=1),
                                      nn.ReLU(inplace=True))
        self.relu = DYReLU(channels, config.dyrelu_reduction)
        self.offset = nn.Conv2d(channels, 27, kernel_size=3, stride=1, padding=1)
        for module in list(self.DyConv.modules()) + list(self.AttnConv.modules()):
            if isinstance(module, (nn.Conv2d, ModulatedDeformConv)):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, state: dict) -> dict:
        visual = state["visual"]
        out = []
        for level, feature in enumerate(visual):
            offset_mask = self.offset(feature)
            offset = offset_mask[:, :18, :, :]
            mask = offset_mask[:, 18:, :, :].sigmoid()
            branches = [self.DyConv[1](feature, offset, mask)]
            if level > 0:
                branches.append(self.DyConv[2](visual[level - 1], offset, mask))
            if level < len(visual) - 1:
                coarse = self.DyConv[0](visual[level + 1], offset, mask)
                # F.upsample_bilinear == interpolate(bilinear, align_corners=True)
                branches.append(F.interpolate(coarse, size=feature.shape[-2:], mode="bilinear", align_corners=True))
            stacked = torch.stack(branches)
            attention = h_sigmoid(torch.stack([self.AttnConv(branch) for branch in branches]))
            out.append(self.relu(torch.mean(stacked * attention, dim=0)))
        return {**state, "visual": out}


class Scale(nn.Module):
    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init_value]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class VLDyHead(nn.Module):
    def __init__(self, config: GlipConfig):
        super().__init__()
        self.config = config
        tower: list[nn.Module] = []
        for i in range(config.dyhead_num_convs):
            if config.early_fuse_on:
                tower.append(VLFuse(config))
                last = i == config.dyhead_num_convs - 1
                tower.append(DummyLayer() if last and not config.use_fused_features_dot_product
                             else BertEncoderLayer(config))
            tower.append(DyConv(config))
        self.dyhead_tower = nn.Sequential(*tower)
        channels, anchors = config.dyhead_channels, config.num_anchors
        self.cls_logits = nn.Conv2d(channels, anchors * config.num_classes, kernel_size=1)
        self.bbox_pred = nn.Conv2d(channels, anchors * 4, kernel_size=1)
        self.centerness = nn.Conv2d(channels, anchors * 1, kernel_size=1)
        bias_value = -math.log((1 - config.prior_prob) / config.prior_prob)
        self.dot_product_projection_text = nn.Linear(config.text_hidden_size, anchors * channels, bias=True)
        self.log_scale = nn.Parameter(torch.tensor([config.log_scale_init]))
        self.bias_lang = nn.Parameter(torch.zeros(config.text_hidden_size))
        self.bias0 = nn.Parameter(torch.tensor([bias_value]))
        for conv in (self.cls_logits, self.bbox_pred, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_logits.bias, bias_value)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(5)])

    def forward(self, visual: list[torch.Tensor], hidden: torch.Tensor, embedded: torch.Tensor,
                masks: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """-> per level: box regression (B, 4, H, W), centerness (B, 1, H, W), token logits (B, H*W, T).
        `cls_logits` is not evaluated: in dot-product mode its values are unused (inference.py:648-663)."""
        state = self.dyhead_tower({"visual": list(visual), "hidden": hidden, "masks": masks})
        embedding = state["hidden"] if self.config.has_fused_language else embedded  # vldyhead.py:746-747
        embedding = F.normalize(embedding, p=2, dim=-1)
        proj_tokens = self.dot_product_projection_text(embedding / 2.0)
        token_bias = torch.matmul(embedding, self.bias_lang) + self.bias0  # (B, T)
        clamp = self.config.clamp_value
        box_regression, centerness, logits = [], [], []
        for level, feature in enumerate(state["visual"]):
            box_regression.append(self.scales[level](self.bbox_pred(feature)))
            centerness.append(self.centerness(feature))
            queries = permute_and_flatten(feature)  # identity image projection
            logit = torch.matmul(queries, proj_tokens.transpose(-1, -2)) / self.log_scale.exp() + token_bias[:, None, :]
            logits.append(logit.clamp(min=-clamp, max=clamp))
        return box_regression, centerness, logits
