"""Swin Transformer v1 as GLIP's `SWINT-FPN-RETINANET` body (maskrcnn_benchmark/modeling/backbone/swint.py,
microsoft/GLIP 9dda955). Module names follow the official ones, so the state dict keys are
`backbone.body.*` of the official checkpoints once prefixed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synground_assets.models.glip.config import GlipConfig

SHIFT_MASK_VALUE = -100.0  # swint.py:372


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window, window, C), windows row-major (swint.py:38-48)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    b = int(windows.shape[0] / (h * w / window / window))
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def shifted_window_mask(height: int, width: int, window: int, shift: int,
                        device: torch.device | None = None) -> torch.Tensor:
    """(nW, window^2, window^2): 0 within a region, -100 between regions, on the padded size
    (swint.py:355-373: slices [0:-w], [-w:-s], [-s:] per axis)."""
    hp = -(-height // window) * window
    wp = -(-width // window) * window
    img_mask = torch.zeros((1, hp, wp, 1), device=device)
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = count
            count += 1
    windows = window_partition(img_mask, window).view(-1, window * window)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, SHIFT_MASK_VALUE).masked_fill(mask == 0, 0.0)


def relative_position_index(window: int) -> torch.Tensor:
    """(w^2, w^2) indices into the ((2w-1)^2, heads) bias table (swint.py:87-101)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = torch.flatten(coords, 1)
    relative = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    relative[:, :, 0] += window - 1
    relative[:, :, 1] += window - 1
    relative[:, :, 0] *= 2 * window - 1
    return relative.sum(-1)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.window, self.heads = window, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(b_ // windows, windows, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # erf GELU (swint.py Mlp act_layer=nn.GELU)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        # Pad right/bottom to a window multiple (swint.py:202-205).
        pad_r = (self.window - w % self.window) % self.window
        pad_b = (self.window - h % self.window) % self.window
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, hp, wp, _ = x.shape
        if self.shift > 0:  # roll(-shift) before, roll(+shift) after (swint.py:209-231)
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(x, self.window).view(-1, self.window * self.window, c)
        windows = self.attn(windows, mask=mask if self.shift > 0 else None)
        x = window_reverse(windows.view(-1, self.window, self.window, c), self.window, hp, wp)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x[:, :h, :w, :].contiguous().view(b, h * w, c)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=eps)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:  # swint.py:267-270
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # This order: (0,0), (1,0), (0,1), (1,1) (swint.py:272-276).
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, eps: float,
                 downsample: bool):
        super().__init__()
        self.window, self.shift = window, window // 2
        self.blocks = nn.ModuleList([
            SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, eps) for i in range(depth)])
        self.downsample = PatchMerging(dim, eps) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int):
        # Built once per stage on the padded size (swint.py:355-373); used by every odd block, even
        # when the map is no larger than a window (the detection Swin has no such exception).
        mask = shifted_window_mask(h, w, self.window, self.shift, x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int, eps: float):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        if w % self.patch:  # right/bottom zero padding to a patch multiple (swint.py:415-419)
            x = F.pad(x, (0, self.patch - w % self.patch))
        if h % self.patch:
            x = F.pad(x, (0, 0, 0, self.patch - h % self.patch))
        x = self.proj(x)
        b, c, hh, ww = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).view(b, c, hh, ww)


class SwinTransformer(nn.Module):
    """Outputs the 4 stages as (B, C, H, W); stage 0 has no output norm (`norm0` is nn.Identity for
    the RETINANET body, swint.py:547-552), stages 1-3 use norm1..norm3."""

    def __init__(self, config: GlipConfig):
        super().__init__()
        eps = config.swin_layer_norm_eps
        self.widths = config.swin_widths
        self.patch_embed = PatchEmbed(config.patch_size, config.swin_embed_dim, eps)
        self.layers = nn.ModuleList([
            SwinStage(self.widths[i], config.swin_depths[i], config.swin_heads[i], config.swin_window_size,
                      config.swin_mlp_ratio, eps, downsample=i < 3) for i in range(4)])
        self.norm0 = nn.Identity()
        self.norm1 = nn.LayerNorm(self.widths[1], eps=eps)
        self.norm2 = nn.LayerNorm(self.widths[2], eps=eps)
        self.norm3 = nn.LayerNorm(self.widths[3], eps=eps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        h, w = x.shape[2], x.shape[3]
        x = x.flatten(2).transpose(1, 2)
        outs = []
        for i, layer in enumerate(self.layers):
            out, x, oh, ow = layer(x, h, w)
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.view(-1, h, w, self.widths[i]).permute(0, 3, 1, 2).contiguous())
            h, w = oh, ow
        return outs
