"""Every size and threshold of a GLIP model, explicit, so that tiny models can be built by shrinking them.

Defaults are GLIP-T as `configs/pretrain/glip_Swin_T_O365_GoldG.yaml` over
`maskrcnn_benchmark/config/defaults.py` (microsoft/GLIP 9dda955); `glip_tiny_a()` is
`glip_A_Swin_T_O365.yaml` (no early fusion) and `glip_large()` is `glip_Swin_L.yaml`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from synground_assets.models.folders import read_config, save_config

CONFIG_FILE = "config.json"
MODEL_TYPE = "glip"


@dataclass
class GlipConfig:
    variant: str = "glip-t"
    # Vision: Swin v1 (backbone/swint.py; defaults.py:690-708, SWINT.*).
    patch_size: int = 4
    swin_embed_dim: int = 96
    swin_depths: tuple[int, ...] = (2, 2, 6, 2)
    swin_heads: tuple[int, ...] = (3, 6, 12, 24)
    swin_window_size: int = 7
    swin_mlp_ratio: float = 4.0
    swin_layer_norm_eps: float = 1e-5  # nn.LayerNorm default (swint.py norm_layer=nn.LayerNorm)
    # FPN (backbone/__init__.py:37-74): C3-C5 -> P3-P5, P6 from P5, P7 from relu(P6).
    fpn_channels: int = 256  # MODEL.BACKBONE.OUT_CHANNELS
    # Language: bert-base-uncased (language_backbone/bert_model.py), all layers, no pooler.
    vocab_size: int = 30522
    text_hidden_size: int = 768  # LANGUAGE_BACKBONE.LANG_DIM
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate_size: int = 3072
    text_max_position_embeddings: int = 512
    text_type_vocab_size: int = 2
    text_layer_norm_eps: float = 1e-12
    text_hidden_act: str = "gelu"  # erf GELU (transformers ACT2FN["gelu"])
    pad_token_id: int = 0
    max_query_len: int = 256  # LANGUAGE_BACKBONE.MAX_QUERY_LEN, PAD_MAX True
    # VL-DyHead (rpn/vldyhead.py:560-860).
    dyhead_channels: int = 256  # DYHEAD.CHANNELS (= FUSE_CONFIG.JOINT_EMB_SIZE)
    dyhead_num_convs: int = 6  # DYHEAD.NUM_CONVS (GLIP-L 8)
    group_norm_groups: int = 16  # MODEL.GROUP_NORM.NUM_GROUPS
    group_norm_eps: float = 1e-5  # nn.GroupNorm default (vldyhead.py Conv3x3Norm)
    early_fuse_on: bool = True  # FUSE_CONFIG.EARLY_FUSE_ON (GLIP-T (A): False)
    use_fused_features_dot_product: bool = True  # FUSE_CONFIG.USE_FUSED_FEATURES_DOT_PRODUCT
    fuse_embed_dim: int = 2048  # VLFuse.embed_dim, fixed in vldyhead.py:438
    fuse_heads: int = 8  # VLFuse.n_head, vldyhead.py:437
    clamp_value: float = 50000.0  # CLAMP_* (fuse_helper.py:246-258, modeling_bert.py:139-142, vldyhead.py:836)
    dyrelu_reduction: int = 4  # DYReLU(inp, oup) default reduction (layers/dyrelu.py:40)
    num_classes: int = 80  # DYHEAD.NUM_CLASSES - 1: cls_logits channels, at most this many phrases
    prior_prob: float = 0.01  # DYHEAD.PRIOR_PROB (bias0 init)
    log_scale_init: float = 0.0  # DYHEAD.LOG_SCALE
    # Anchors (rpn/anchor_generator.py; RPN.* of the yaml).
    anchor_sizes: tuple[int, ...] = (64, 128, 256, 512, 1024)
    anchor_strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    aspect_ratios: tuple[float, ...] = (1.0,)
    scales_per_octave: int = 1
    octave: float = 2.0
    # Box coder (vldyhead.py:38-94).
    box_coder_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    bbox_xform_clip: float = math.log(1000.0 / 16)
    # ATSS post-processing (rpn/inference.py:592-835; MODEL.ATSS.*).
    inference_th: float = 0.05
    pre_nms_top_n: int = 1000
    nms_th: float = 0.6
    detections_per_img: int = 100
    min_size: float = 0.0  # RPN.MIN_SIZE
    score_agg: str = "MEAN"  # DYHEAD.SCORE_AGG
    # Preprocessing, for the processor (predictor_glip.py:62-90; INPUT.*, DATALOADER.*).
    pixel_mean: tuple[float, ...] = (103.530, 116.280, 123.675)  # BGR x255
    pixel_std: tuple[float, ...] = (57.375, 57.120, 58.395)
    size_divisibility: int = 32
    min_size_test: int = 800
    max_size_test: int = 1333
    initializer_range: float = 0.02  # random init only (tiny models)
    model_type: str = MODEL_TYPE

    def __post_init__(self):
        for name in ("swin_depths", "swin_heads", "anchor_sizes", "anchor_strides", "aspect_ratios",
                     "box_coder_weights", "pixel_mean", "pixel_std"):
            setattr(self, name, tuple(getattr(self, name)))
        if len(self.swin_depths) != 4 or len(self.swin_heads) != 4:
            raise ValueError(f"swin_depths and swin_heads need 4 stages, got {self.swin_depths} and {self.swin_heads}")
        for stage, heads in enumerate(self.swin_heads):
            if (self.swin_embed_dim * 2 ** stage) % heads:
                raise ValueError(f"Swin stage {stage} width {self.swin_embed_dim * 2 ** stage} "
                                 f"is not divisible by its {heads} heads")
        if self.text_hidden_size % self.text_heads:
            raise ValueError(f"text_hidden_size {self.text_hidden_size} is not divisible by "
                             f"text_heads {self.text_heads}")
        if self.text_max_position_embeddings < self.max_query_len:
            raise ValueError(f"text_max_position_embeddings ({self.text_max_position_embeddings}) must cover "
                             f"max_query_len ({self.max_query_len}): the query is always padded to it")
        if self.fuse_embed_dim % self.fuse_heads:
            raise ValueError(f"fuse_embed_dim {self.fuse_embed_dim} is not divisible by fuse_heads {self.fuse_heads}")
        if self.fpn_channels != self.dyhead_channels:
            raise ValueError(f"fpn_channels ({self.fpn_channels}) must equal dyhead_channels ({self.dyhead_channels}): "
                             "the fusion's visual width is JOINT_EMB_SIZE = DYHEAD.CHANNELS")
        if self.dyhead_channels % self.group_norm_groups:
            raise ValueError(f"dyhead_channels {self.dyhead_channels} is not divisible by "
                             f"group_norm_groups {self.group_norm_groups}")
        if len(self.anchor_sizes) != 5 or len(self.anchor_strides) != 5:
            raise ValueError("anchor_sizes and anchor_strides need one entry per level P3-P7 (5)")
        if self.num_anchors != 1:
            raise ValueError("the dot-product head needs one anchor per location "
                             f"(len(aspect_ratios) x scales_per_octave = {self.num_anchors})")
        if self.score_agg != "MEAN":
            raise ValueError(f"score_agg {self.score_agg!r} is not supported; GLIP's configs use 'MEAN'")
        if self.model_type != MODEL_TYPE:
            raise ValueError(f"model_type must be {MODEL_TYPE!r} but is {self.model_type!r}")

    @property
    def num_anchors(self) -> int:
        return len(self.aspect_ratios) * self.scales_per_octave

    @property
    def swin_widths(self) -> tuple[int, ...]:
        return tuple(self.swin_embed_dim * 2 ** stage for stage in range(4))

    @property
    def has_fused_language(self) -> bool:
        """Whether the dot product uses the tower's fused language features (else BERT's `embedded`)."""
        return self.early_fuse_on and self.use_fused_features_dot_product

    def bert_config(self):
        """The transformers `BertConfig` of the language backbone."""
        from transformers import BertConfig

        return BertConfig(vocab_size=self.vocab_size, hidden_size=self.text_hidden_size,
                          num_hidden_layers=self.text_layers, num_attention_heads=self.text_heads,
                          intermediate_size=self.text_intermediate_size, hidden_act=self.text_hidden_act,
                          max_position_embeddings=self.text_max_position_embeddings,
                          type_vocab_size=self.text_type_vocab_size, layer_norm_eps=self.text_layer_norm_eps,
                          pad_token_id=self.pad_token_id, initializer_range=self.initializer_range)

    def save(self, folder: str | Path) -> None:
        save_config(self, folder)

    @classmethod
    def load(cls, folder: str | Path) -> GlipConfig:
        return cls(**read_config(cls, folder, MODEL_TYPE, "a GLIP"))


def glip_tiny(**overrides) -> GlipConfig:
    """GLIP-T (B/C and the released GLIP-T): configs/pretrain/glip_Swin_T_O365_GoldG.yaml."""
    return GlipConfig(**{"variant": "glip-t", **overrides})


def glip_tiny_a(**overrides) -> GlipConfig:
    """GLIP-T (A): configs/pretrain/glip_A_Swin_T_O365.yaml, EARLY_FUSE_ON and
    USE_FUSED_FEATURES_DOT_PRODUCT False (the tower is DyConvs only)."""
    return GlipConfig(**{"variant": "glip-t-a", "early_fuse_on": False,
                         "use_fused_features_dot_product": False, **overrides})


def glip_large(**overrides) -> GlipConfig:
    """GLIP-L: configs/pretrain/glip_Swin_L.yaml:12-15 (Swin-L, window 12) and NUM_CONVS 8."""
    return GlipConfig(**{"variant": "glip-l", "swin_embed_dim": 192, "swin_depths": (2, 2, 18, 2),
                         "swin_heads": (6, 12, 24, 48), "swin_window_size": 12, "dyhead_num_convs": 8,
                         **overrides})


PRESETS = {"tiny": glip_tiny, "tiny-a": glip_tiny_a, "large": glip_large}


def is_glip_folder(folder: str | Path) -> bool:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("model_type") == MODEL_TYPE
    except (json.JSONDecodeError, AttributeError):
        return False
