"""ALBEF's vision encoder: a ViT with timm's parameter names (ALBEF models/vit.py).

Class token first, then the patches row-major; pre-norm blocks with a fused qkv projection (bias),
GELU (erf) MLP, LayerNorm eps 1e-6, a final `norm`, no classification head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synground_assets.models.albef.config import AlbefConfig


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_side: int) -> torch.Tensor:
    """(1, 1 + s*s, D) -> (1, 1 + grid_side**2, D): the class token kept, the patch grid resized
    bicubic with align_corners=False (ALBEF models/vit.py `interpolate_pos_embed`)."""
    patches = pos_embed.shape[1] - 1
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(f"pos_embed has {patches} patch positions, not a square grid")
    if side == grid_side:
        return pos_embed
    class_token, grid = pos_embed[:, :1], pos_embed[:, 1:]
    grid = grid.reshape(-1, side, side, pos_embed.shape[-1]).permute(0, 3, 1, 2)  # (1, D, s, s)
    grid = F.interpolate(grid, size=(grid_side, grid_side), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2)  # (1, grid_side**2, D)
    return torch.cat((class_token, grid), dim=1)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values).flatten(2).transpose(1, 2)  # (B, P, D), row-major


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.qkv = nn.Linear(width, width * 3, bias=True)
        self.proj = nn.Linear(width, width)
        self.captured: list[torch.Tensor] | None = None  # set to a list to record the probabilities (ITC GradCAM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]  # (B, heads, N, head_dim)
        attention = ((query @ key.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, heads, N, N)
        if self.captured is not None:
            self.captured.append(attention)
        return self.proj((attention @ value).transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, config: AlbefConfig):
        super().__init__()
        width = config.vision_width
        self.patch_size = config.patch_size
        self.patch_embed = PatchEmbed(config.patch_size, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid_side**2, width))
        self.blocks = nn.ModuleList(
            Block(width, config.vision_heads, config.vision_mlp_ratio, config.vision_layer_norm_eps)
            for _ in range(config.vision_layers)
        )
        self.norm = nn.LayerNorm(width, eps=config.vision_layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + P, D). A square input of another size than the one pos_embed is
        laid out for gets pos_embed interpolated on the fly, as the official loader would have."""
        if pixel_values.shape[-1] != pixel_values.shape[-2] or pixel_values.shape[-1] % self.patch_size:
            raise ValueError(f"ALBEF takes square images with a side divisible by {self.patch_size}, got "
                             f"{tuple(pixel_values.shape[-2:])}")
        x = self.patch_embed(pixel_values)  # (B, P, D)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # (B, 1 + P, D)
        x = x + interpolate_pos_embed(self.pos_embed, pixel_values.shape[-1] // self.patch_size)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
