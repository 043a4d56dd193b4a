"""The diffusion transformer: spacetime patches of video latents in, flow velocity out.

    x (B, C, T, H, W) latents --patchify--> (B, N, D) tokens, N = T/pt * H/ph * W/pw
    t (B,) in [0, 1] + pooled text (unless pooled_text=False) --> c (B, D) --adaLN-Zero--> every block
    text (B, L, text_dim) --> cross-attention (PixArt-alpha) or joint attention (SD3 MMDiT)
    blocks: full 3D self-attention with 3D RoPE and QK-norm, then MLP
    final adaLN + Linear --unpatchify--> velocity (B, C, T, H, W)

DiT (Peebles & Xie 2023) is the skeleton: adaLN-Zero blocks and a zero-initialised output, so at
init every block is the identity and the output is exactly zero. Size presets are the DiT paper's
S/B/L/XL plus a CPU-tiny one and an Open-Sora-2.0-class one; `python -m kinema.models.dit --list`
prints their parameter counts and FLOPs.

Precision: under bf16 autocast these stay fp32 on purpose: the timestep sinusoids (t * 1000 *
freq is up to 1000 rad, which bf16 cannot place to better than ~4 rad), the RoPE cos/sin and
rotation (see rope.py), and the statistics of every LayerNorm/RMSNorm (a mean of squares over
thousands of channels). Matmuls and attention run in the autocast dtype.

This file is plain PyTorch: FSDP, activation checkpointing and compile wrap `DiT.blocks` from the
trainer (torchtitan style), so nothing here imports torch.distributed.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError, from_dict
from .rope import apply_rope, rope_angles, rope_cos_sin, rope_split


@dataclass
class DiTConfig:
    in_channels: int = 16  # latent channels of the video autoencoder
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) latent cells per token
    hidden_size: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 384  # width of the text encoder's states
    conditioning: Literal["cross", "joint"] = "cross"
    qk_norm: bool = True
    rope_theta: float = 10000.0
    rope_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (t, h, w) multipliers of token positions (rope.py)
    text_refiner_depth: int = 0  # self-attention blocks over the caption's tokens before any block reads them
    pooled_text: bool = True  # add the caption's mean state to the timestep embedding (SD3); False: adaLN sees t only (PixArt-alpha)

    def __post_init__(self):
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.rope_scale = tuple(float(s) for s in self.rope_scale)
        if len(self.rope_scale) != 3 or min(self.rope_scale) <= 0:
            raise ConfigError(f"DiTConfig.rope_scale must be three positive numbers (t, h, w), got {self.rope_scale}")
        if self.text_refiner_depth < 0:
            raise ConfigError(f"DiTConfig.text_refiner_depth must be >= 0, got {self.text_refiner_depth}")
        for name in ("in_channels", "hidden_size", "depth", "num_heads", "text_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"DiTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ConfigError(f"DiTConfig.patch_size must be three positive ints (t, h, w), got {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"DiTConfig.hidden_size={self.hidden_size} must be divisible by "
                              f"num_heads={self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 8:
            raise ConfigError(f"head_dim = hidden_size / num_heads = {self.head_dim} must be even and >= 8 so "
                              f"3D RoPE can split it into even (frame, row, column) parts")
        if self.conditioning not in ("cross", "joint"):
            raise ConfigError(f"DiTConfig.conditioning={self.conditioning!r}: expected 'cross' or 'joint'")
        if self.mlp_ratio <= 0 or self.rope_theta <= 0:
            raise ConfigError(f"mlp_ratio and rope_theta must be > 0, got {self.mlp_ratio} and {self.rope_theta}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)


# Named sizes. S/B/L/XL are the DiT paper's (width/depth/heads); dit-t runs on a laptop CPU;
# dit-os2 is Open-Sora-2.0-class (width 3072, 24 heads of 128, joint text-video attention, ~11B;
# see docs/models.md for how 32 joint blocks map to its 19 double + 38 single-stream blocks).
PRESETS: dict[str, dict] = {
    "dit-t": dict(hidden_size=192, depth=4, num_heads=3),
    "dit-s": dict(hidden_size=384, depth=12, num_heads=6),
    "dit-b": dict(hidden_size=768, depth=12, num_heads=12),
    "dit-l": dict(hidden_size=1024, depth=24, num_heads=16),
    "dit-xl": dict(hidden_size=1152, depth=28, num_heads=16),
    "dit-os2": dict(hidden_size=3072, depth=32, num_heads=24, text_dim=4096, conditioning="joint"),
}


def dit_config(name: str, **overrides) -> DiTConfig:
    """A preset by name, with keyword overrides (unknown keys are an error)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown DiT preset {name!r}; known: {list(PRESETS)}")
    return from_dict(DiTConfig, {**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------- building blocks

class Norm(nn.LayerNorm):
    """LayerNorm whose statistics are computed in fp32 whatever the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm (fp32 statistics); used as QK-norm on each head's q and k."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: per-sample shift and scale (B, D) applied to every token of x (B, N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TanhGELU(nn.Module):
    """GELU, tanh approximation (DiT, PixArt): 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).

    Sampling on a CPU in fp32 (no autograd) computes it as x sigmoid(2u), the same function
    (0.5 (1 + tanh u) = sigmoid(2u); equal within 5e-7), in place in one buffer: 2.3x faster than
    F.gelu's tanh kernel on an AVX2 CPU, where the MLP's GELU took half as long as its matmul.
    Training, other dtypes and GPUs use F.gelu."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() or x.dtype != torch.float32 or x.device.type != "cpu":
            return F.gelu(x, approximate="tanh")
        z = x * x
        z.mul_(0.044715).add_(1.0).mul_(x).mul_(2.0 * math.sqrt(2.0 / math.pi))  # 2u
        return z.sigmoid_().mul_(x)


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), TanhGELU(), nn.Linear(hidden, dim))


class QKV(nn.Module):
    """One Linear to q, k, v split into heads, with QK-norm (RMSNorm per head on q and k).

    QK-norm (Dehghani et al. 2023 ViT-22B; used by SD3 and Open-Sora 2.0) bounds the attention
    logits, which otherwise grow with width and blow up bf16 training of large models.
    With query=False only k and v are made (q is None): a stream that is read but never reads.
    """

    def __init__(self, dim: int, heads: int, qk_norm: bool, query: bool = True):
        super().__init__()
        self.heads, self.n = heads, 3 if query else 2
        self.qkv = nn.Linear(dim, self.n * dim)
        self.q_norm = RMSNorm(dim // heads) if qk_norm and query else nn.Identity()
        self.k_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, self.n, self.heads, D // self.heads)  # (B, N, 3 or 2, h, d)
        *q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 or 2 x (B, h, N, d)
        return (self.q_norm(q[0]) if q else None), self.k_norm(k), v


def merge_heads(o: Tensor) -> Tensor:
    B, h, N, d = o.shape
    return o.transpose(1, 2).reshape(B, N, h * d)  # (B, N, D)


class SelfAttention(nn.Module):
    """Full 3D self-attention over all video tokens, 3D RoPE on q and k."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.qkv = QKV(cfg.hidden_size, cfg.num_heads, cfg.qk_norm)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        q, k, v = self.qkv(x)  # (B, h, N, d)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))  # (B, N, D)


class CrossAttention(nn.Module):
    """Video queries attend to text keys/values (PixArt-alpha, Open-Sora 1.x). No RoPE: text
    carries its own order from the encoder, and a video token should read the caption the same
    way wherever it sits."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D, self.heads = cfg.hidden_size, cfg.num_heads
        self.q = nn.Linear(D, D)
        self.kv = nn.Linear(D, 2 * D)
        self.q_norm = RMSNorm(cfg.head_dim) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(cfg.head_dim) if cfg.qk_norm else nn.Identity()
        self.proj = nn.Linear(D, D)
        self.keep_maps: list[Tensor] | None = None  # a list: each call appends its probabilities (grounding)

    def keys_values(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """The text's keys (QK-normed) and values, 2 x (B, h, L, d): the same at every noise level."""
        B, L, _ = y.shape
        k, v = self.kv(y).view(B, L, 2, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, h, L, d)
        return self.k_norm(k), v

    def forward(self, x: Tensor, y: Tensor, mask: Tensor | None, has_text: Tensor | None,
                kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """kv: keys_values(y) made beforehand (a sampler's TextContext), else made here from y."""
        B, N, D = x.shape
        q = self.q_norm(self.q(x).view(B, N, self.heads, -1).transpose(1, 2))  # (B, h, N, d)
        k, v = kv if kv is not None else self.keys_values(y)  # 2 x (B, h, L, d)
        if self.keep_maps is None:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, N, d)
        else:  # the same attention, its probabilities kept (kinema/train/grounding.py)
            logits = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5  # (B, h, N, L)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            probs = logits.softmax(-1)
            self.keep_maps.append(probs)
            o = probs.to(v.dtype) @ v  # (B, h, N, d)
        out = self.proj(merge_heads(o))  # (B, N, D)
        if has_text is not None:  # a caption with no real tokens contributes nothing (not NaN)
            out = out * has_text.view(B, 1, 1).to(out.dtype)
        return out


class CrossDiTBlock(nn.Module):
    """adaLN-Zero self-attention -> cross-attention to text -> adaLN-Zero MLP.

    The cross-attention is not modulated by t (as PixArt-alpha); its output projection is
    zero-initialised instead, so the block still starts as the identity.
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D = cfg.hidden_size
        self.norm1 = Norm(D, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(cfg)
        self.norm_cross = Norm(D, eps=1e-6)
        self.cross = CrossAttention(cfg)
        self.norm2 = Norm(D, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(D, cfg.mlp_hidden)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))

    def forward(self, x: Tensor, y: Tensor, c: Tensor, rope: tuple[Tensor, Tensor],
                mask: Tensor | None, has_text: Tensor | None,
                kv: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c).chunk(6, dim=-1)  # 6 x (B, D)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1), rope)
        x = x + self.cross(self.norm_cross(x), y, mask, has_text, kv)
        x = x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x, y


class JointDiTBlock(nn.Module):
    """MMDiT block (SD3): video and text tokens in ONE attention, each stream with its own
    adaLN-Zero, QKV, QK-norm, output projection and MLP (two sets of weights, as SD3; the
    modalities differ too much to share them in a small model).

    RoPE rotates the video part only. Padding text tokens are masked as keys, so no token ever
    reads them. In the last block the text stream's output is never used, so (SD3's
    `context_pre_only`) it only provides keys/values: no text queries, QK-norm on q, projection or
    MLP, and so no parameters that would sit unused under DDP.
    """

    def __init__(self, cfg: DiTConfig, last: bool = False):
        super().__init__()
        D = cfg.hidden_size
        self.last = last
        self.norm_x1 = Norm(D, elementwise_affine=False, eps=1e-6)
        self.norm_y1 = Norm(D, elementwise_affine=False, eps=1e-6)
        self.qkv_x = QKV(D, cfg.num_heads, cfg.qk_norm)
        self.qkv_y = QKV(D, cfg.num_heads, cfg.qk_norm, query=not last)
        self.proj_x = nn.Linear(D, D)
        self.norm_x2 = Norm(D, elementwise_affine=False, eps=1e-6)
        self.mlp_x = MLP(D, cfg.mlp_hidden)
        self.adaLN_x = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        self.adaLN_y = nn.Sequential(nn.SiLU(), nn.Linear(D, (2 if last else 6) * D))
        if not last:
            self.proj_y = nn.Linear(D, D)
            self.norm_y2 = Norm(D, elementwise_affine=False, eps=1e-6)
            self.mlp_y = MLP(D, cfg.mlp_hidden)

    def forward(self, x: Tensor, y: Tensor, c: Tensor, rope: tuple[Tensor, Tensor],
                mask: Tensor | None, has_text: Tensor | None,
                kv: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """kv is never given here: the text stream is modulated by t, so nothing of it is cached."""
        N = x.shape[1]
        mx = self.adaLN_x(c).chunk(6, dim=-1)  # 6 x (B, D)
        my = self.adaLN_y(c).chunk(2 if self.last else 6, dim=-1)  # 2 or 6 x (B, D)
        qx, kx, vx = self.qkv_x(modulate(self.norm_x1(x), mx[0], mx[1]))  # (B, h, N, d)
        qy, ky, vy = self.qkv_y(modulate(self.norm_y1(y), my[0], my[1]))  # (B, h, L, d)
        qx, kx = apply_rope(qx, *rope), apply_rope(kx, *rope)
        k, v = torch.cat([kx, ky], dim=2), torch.cat([vx, vy], dim=2)  # (B, h, N+L, d)
        q = qx if self.last else torch.cat([qx, qy], dim=2)  # (B, h, N, d) or (B, h, N+L, d)
        o = merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))  # (B, N or N+L, D)
        x = x + mx[2].unsqueeze(1) * self.proj_x(o[:, :N])
        x = x + mx[5].unsqueeze(1) * self.mlp_x(modulate(self.norm_x2(x), mx[3], mx[4]))
        if self.last:
            return x, y
        y = y + my[2].unsqueeze(1) * self.proj_y(o[:, N:])
        y = y + my[5].unsqueeze(1) * self.mlp_y(modulate(self.norm_y2(y), my[3], my[4]))
        return x, y


class TextRefinerBlock(nn.Module):
    """Pre-norm self-attention over the caption's tokens, with 1D RoPE on their order, then an MLP.

    Why: a video token reads the caption through cross-attention, which sees the text states as a
    set. Which motion goes with which object ("a red square standing still, and a purple circle
    heading left") is a matter of word order, and the encoder's states carry little of it: the
    shipped model's flow loss barely changes when two objects' motions are swapped in the caption
    (docs/default-model.md). Here the tokens attend to each other knowing their relative
    positions, so an object's words can be written into its motion's state before any video
    token reads them (a token refiner, as HunyuanVideo's). Both residual outputs start at zero, so
    a refiner added to a trained model leaves it computing exactly what it did.
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D = cfg.hidden_size
        self.norm1 = Norm(D, eps=1e-6)
        self.qkv = QKV(D, cfg.num_heads, cfg.qk_norm)
        self.proj = nn.Linear(D, D)
        self.norm2 = Norm(D, eps=1e-6)
        self.mlp = MLP(D, cfg.mlp_hidden)

    def forward(self, y: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        q, k, v = self.qkv(self.norm1(y))  # (B, h, L, d)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = y + self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))  # (B, L, D)
        return y + self.mlp(self.norm2(y))


def text_rope(length: int, head_dim: int, theta: float, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
    """cos, sin (L, head_dim // 2) of 1D RoPE over token order: every 3D-RoPE axis gets the index."""
    angles = rope_angles(torch.arange(length, device=device)[:, None].expand(length, 3), head_dim, theta)
    return angles.cos(), angles.sin()


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoid of 1000 t (the DDPM-style range the DiT embedding was tuned for) -> MLP."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, half), fp32: see the module docstring
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, freq_dim)
        return self.mlp(emb)  # (B, D)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm -> Linear to patch values; all zero at init (DiT)."""

    def __init__(self, dim: int, patch_dim: int):
        super().__init__()
        self.norm = Norm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_dim)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN(c).chunk(2, dim=-1)  # 2 x (B, D)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, patch_dim)


# ----------------------------------------------------------------------------- patches

def patchify(x: Tensor, patch: tuple[int, int, int]) -> Tensor:
    """(B, C, T, H, W) -> (B, N, pt*ph*pw*C) tokens in (frame, row, column) row-major order."""
    B, C, T, H, W = x.shape
    pt, ph, pw = patch
    x = x.reshape(B, C, T // pt, pt, H // ph, ph, W // pw, pw)  # (B, C, T', pt, H', ph, W', pw)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, T', H', W', pt, ph, pw, C)
    return x.reshape(B, (T // pt) * (H // ph) * (W // pw), pt * ph * pw * C)  # (B, N, P)


def unpatchify(tokens: Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int], channels: int) -> Tensor:
    """(B, N, pt*ph*pw*C) -> (B, C, T, H, W); the inverse of patchify."""
    B = tokens.shape[0]
    (gt, gh, gw), (pt, ph, pw) = grid, patch
    x = tokens.reshape(B, gt, gh, gw, pt, ph, pw, channels)  # (B, T', H', W', pt, ph, pw, C)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, T', pt, H', ph, W', pw)
    return x.reshape(B, channels, gt * pt, gh * ph, gw * pw)  # (B, C, T, H, W)


def masked_mean(text: Tensor, mask: Tensor | None) -> Tensor:
    """(B, L, E) -> (B, E): the mean over real tokens (fp32); zeros for a caption with none."""
    if mask is None:
        return text.float().mean(1)
    m = mask.float().unsqueeze(-1)  # (B, L, 1)
    return (text.float() * m).sum(1) / m.sum(1).clamp(min=1.0)


def text_keys(text_mask: Tensor | None) -> Tensor | None:
    """(B, L) real-token mask -> (B, 1, 1, L) attention mask of the text keys. A row with every key
    masked would be NaN, so an empty caption attends to its (zeroed) padding; the cross-attention
    then drops what it read (has_text)."""
    if text_mask is None:
        return None
    return (text_mask | ~text_mask.any(dim=1, keepdim=True))[:, None, None, :]


@dataclass
class TextContext:
    """DiT.encode_text's result: everything the DiT computes from the caption alone."""
    y: Tensor  # (B, L, D) caption states after the embedding and the text refiner
    mask: Tensor | None  # (B, L) bool, True = real token; None = all real
    pooled: Tensor | None  # (B, D) pooled-caption vector added to the timestep embedding; None without
    kv: list[tuple[Tensor, Tensor]] | None  # per cross-attention block: keys and values (B, h, L, d); None: made per step

    def select(self, index: Tensor) -> "TextContext":
        """The context of rows `index` (a caption computed once, read by many samples)."""
        take = lambda v: None if v is None else v[index]  # noqa: E731
        return TextContext(self.y[index], take(self.mask), take(self.pooled),
                           None if self.kv is None else [(k[index], v[index]) for k, v in self.kv])


# ----------------------------------------------------------------------------- the model

class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden_size
        self.patch_dim = cfg.in_channels * math.prod(cfg.patch_size)
        self.x_embed = nn.Linear(self.patch_dim, D)  # a Conv3d with stride = kernel = patch, as a matmul
        self.t_embed = TimestepEmbedder(D)
        # Caption projection as PixArt-alpha (Linear-GELU-Linear) and a pooled-text vector added
        # to the timestep embedding as SD3 does with pooled CLIP: every block's adaLN sees a
        # global summary of the caption, which small models pick up much faster than attention.
        self.text_embed = nn.Sequential(nn.Linear(cfg.text_dim, D), TanhGELU(), nn.Linear(D, D))
        # pooled_text = False leaves it out: the caption then reaches a token only through
        # cross-attention, where a word can be read at one object and not at another.
        self.pooled_embed = (nn.Sequential(nn.Linear(cfg.text_dim, D), nn.SiLU(), nn.Linear(D, D))
                             if cfg.pooled_text else None)
        self.text_refiner = nn.ModuleList(TextRefinerBlock(cfg) for _ in range(cfg.text_refiner_depth))
        if cfg.conditioning == "cross":
            self.blocks = nn.ModuleList(CrossDiTBlock(cfg) for _ in range(cfg.depth))
        else:
            self.blocks = nn.ModuleList(JointDiTBlock(cfg, last=i == cfg.depth - 1) for i in range(cfg.depth))
        self.final = FinalLayer(D, self.patch_dim)
        self.initialize_weights()

    def initialize_weights(self):
        # DiT's init: xavier-uniform Linears with zero bias, N(0, 0.02) for the embedding MLPs,
        # and zeros for everything that must make a block (and the whole output) start at zero.
        def _basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.apply(_basic)
        for mlp in (self.t_embed.mlp, self.text_embed, self.pooled_embed):
            if mlp is None:
                continue
            nn.init.normal_(mlp[0].weight, std=0.02)
            nn.init.normal_(mlp[2].weight, std=0.02)
        zero = [self.final.adaLN[-1], self.final.linear]
        zero += [m for block in self.text_refiner for m in (block.proj, block.mlp[2])]  # refiner starts as identity
        for block in self.blocks:
            if isinstance(block, CrossDiTBlock):
                zero += [block.adaLN[-1], block.cross.proj]  # cross.proj: PixArt-alpha's zero init
            else:
                zero += [block.adaLN_x[-1], block.adaLN_y[-1]]
        for m in zero:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, x: Tensor, t: Tensor, text: Tensor, text_mask: Tensor | None, encoded: bool = False):
        cfg = self.cfg
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be (B, {cfg.in_channels}, T, H, W) latents, got shape {tuple(x.shape)}")
        if any(s % p for s, p in zip(x.shape[2:], cfg.patch_size)):
            raise ValueError(f"latent (T, H, W) = {tuple(x.shape[2:])} is not divisible by the patch "
                             f"(t, h, w) = {cfg.patch_size}; pad or crop the latents to a multiple of it")
        B = x.shape[0]
        if t.shape != (B,):
            raise ValueError(f"t must have shape ({B},) (one time per sample), got {tuple(t.shape)}")
        self._check_text(text, text_mask, B, encoded)

    def _check_text(self, text: Tensor, text_mask: Tensor | None, batch: int | None = None, encoded: bool = False):
        """encoded: `text` is a TextContext's states (B, L, hidden_size), not the encoder's."""
        cfg = self.cfg
        what, key, dim = ("context states", "hidden_size", cfg.hidden_size) if encoded else ("text", "text_dim", cfg.text_dim)
        if text.ndim != 3 or text.shape[0] != (batch or text.shape[0]) or text.shape[2] != dim:
            raise ValueError(f"{what} must be (B={batch or 'B'}, L, {key}={dim}), got {tuple(text.shape)}")
        if text_mask is not None and (text_mask.shape != text.shape[:2] or text_mask.dtype != torch.bool):
            raise ValueError(f"text_mask must be a bool tensor of shape {tuple(text.shape[:2])}, "
                             f"got {text_mask.dtype} {tuple(text_mask.shape)}")

    def encode_text(self, text: Tensor, text_mask: Tensor | None = None, keys_values: bool = False) -> TextContext:
        """What the DiT makes of the caption before it reads any video: the same at every noise
        level, so a sampler makes it once (keys_values=True also makes each cross-attention
        block's text keys and values) and passes it to every step as forward(context=...).
        Training leaves keys_values off: each block then makes its own inside its forward, where
        FSDP has gathered that block's weights."""
        cfg = self.cfg
        self._check_text(text, text_mask)
        if text_mask is not None:
            text = text * text_mask.unsqueeze(-1).to(text.dtype)  # padding states are never read; keep them finite
        y = self.text_embed(text)  # (B, L, D)
        pooled = None if self.pooled_embed is None else self.pooled_embed(masked_mean(text, text_mask).to(y.dtype))
        if self.text_refiner:
            text_pos = text_rope(y.shape[1], cfg.head_dim, cfg.rope_theta, text.device)  # 2 x (L, d/2) fp32
            for block in self.text_refiner:
                y = block(y, text_pos, text_keys(text_mask))  # (B, L, D)
        kv = None
        if keys_values and cfg.conditioning == "cross":
            kv = [block.cross.keys_values(y) for block in self.blocks]  # depth x 2 x (B, h, L, d)
        return TextContext(y, text_mask, pooled, kv)

    def forward(self, x: Tensor, t: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None,
                context: TextContext | None = None) -> Tensor:
        """x (B, C, T, H, W) latents at time t (B,) in [0, 1]; text (B, L, text_dim) states with
        text_mask (B, L) bool, True = real token (None = all real), or instead their
        encode_text(...) `context`. Returns the velocity, shaped as x."""
        cfg = self.cfg
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if (text is None) == (context is None):
            raise ValueError("pass the caption exactly once: as text (and text_mask) or as its encode_text context")
        self._check(x, t, text if context is None else context.y, text_mask if context is None else context.mask,
                    encoded=context is not None)
        ctx = self.encode_text(text, text_mask) if context is None else context
        B, C, T, H, W = x.shape
        grid = (T // cfg.patch_size[0], H // cfg.patch_size[1], W // cfg.patch_size[2])
        N = math.prod(grid)

        h = self.x_embed(patchify(x, cfg.patch_size))  # (B, N, D)
        c = self.t_embed(t)  # (B, D)
        if ctx.pooled is not None:
            c = c + ctx.pooled
        rope = rope_cos_sin(grid, cfg.head_dim, cfg.rope_theta, x.device, cfg.rope_scale)  # 2 x (N, d/2) fp32

        mask = has_text = None
        if ctx.mask is not None:
            if cfg.conditioning == "cross":
                mask, has_text = text_keys(ctx.mask), ctx.mask.any(dim=1)  # (B, 1, 1, L), (B,)
            else:
                video = torch.ones(B, N, dtype=torch.bool, device=x.device)
                mask = torch.cat([video, ctx.mask], dim=1)[:, None, None, :]  # (B, 1, 1, N+L)
        y = ctx.y
        for i, block in enumerate(self.blocks):
            h, y = block(h, y, c, rope, mask, has_text, None if ctx.kv is None else ctx.kv[i])
        out = self.final(h, c)  # (B, N, P)
        return unpatchify(out, grid, cfg.patch_size, C)  # (B, C, T, H, W)

    def flops_per_sample(self, latent_thw: tuple[int, int, int], text_len: int) -> int:
        return forward_flops(self.cfg, latent_thw, text_len)


def forward_flops(cfg: DiTConfig, latent_thw: tuple[int, int, int], text_len: int) -> int:
    """Forward FLOPs of one sample (2 per multiply-add; matmuls and attention only, as nanoGPT's
    MFU estimate). A training step costs ~3x this (backward = 2x forward)."""
    N = math.prod(s // p for s, p in zip(latent_thw, cfg.patch_size))
    L, D, M, E, P = text_len, cfg.hidden_size, cfg.mlp_hidden, cfg.text_dim, cfg.in_channels * math.prod(cfg.patch_size)
    lin = lambda tokens, i, o: 2 * tokens * i * o  # noqa: E731
    attn = lambda nq, nk: 2 * 2 * nq * nk * D  # noqa: E731  q.k scores and the weighted sum of v
    f = lin(N, P, D) + lin(L, E, D) + lin(L, D, D)  # patch and caption embedding
    f += lin(1, 256, D) + lin(1, D, D)  # timestep
    f += (lin(1, E, D) + lin(1, D, D)) if cfg.pooled_text else 0  # pooled text
    f += cfg.text_refiner_depth * (lin(L, D, 3 * D) + attn(L, L) + lin(L, D, D) + lin(L, D, M) + lin(L, M, D))
    for i in range(cfg.depth):
        if cfg.conditioning == "cross":
            f += lin(1, D, 6 * D)  # adaLN
            f += lin(N, D, 3 * D) + attn(N, N) + lin(N, D, D)  # self-attention
            f += lin(N, D, D) + lin(L, D, 2 * D) + attn(N, L) + lin(N, D, D)  # cross-attention
            f += lin(N, D, M) + lin(N, M, D)  # MLP
        elif i < cfg.depth - 1:
            f += lin(1, D, 12 * D)
            f += lin(N + L, D, 3 * D) + attn(N + L, N + L) + lin(N + L, D, D) + lin(N + L, D, M) + lin(N + L, M, D)
        else:  # last joint block: text gives keys/values only
            f += lin(1, D, 8 * D)
            f += lin(N, D, 3 * D) + lin(L, D, 2 * D) + attn(N, N + L) + lin(N, D, D) + lin(N, D, M) + lin(N, M, D)
    f += lin(1, D, 2 * D) + lin(N, D, P)  # final layer
    return f


def preset_table(latent_thw: tuple[int, int, int] = (5, 32, 32), text_len: int = 64) -> str:
    """A markdown table of every preset: shape, parameter counts (built on the meta device, no
    memory), forward GFLOPs per sample at the given latent size."""
    rows = ["| preset | hidden | depth | heads | head dim (RoPE t/h/w) | params, cross | params, joint "
            f"| fwd GFLOPs/sample, cross | fwd GFLOPs/sample, joint |",
            "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name in PRESETS:
        counts, flops = {}, {}
        for mode in ("cross", "joint"):
            cfg = dit_config(name, conditioning=mode)
            with torch.device("meta"):
                counts[mode] = DiT(cfg).num_params()
            flops[mode] = forward_flops(cfg, latent_thw, text_len) / 1e9
        cfg = dit_config(name)
        split = "/".join(map(str, rope_split(cfg.head_dim)))
        mark = lambda m: "**" if cfg.conditioning == m else ""  # noqa: E731  the preset's own mode
        rows.append(f"| {name} | {cfg.hidden_size} | {cfg.depth} | {cfg.num_heads} | {cfg.head_dim} ({split}) "
                    f"| {mark('cross')}{_human(counts['cross'])}{mark('cross')} "
                    f"| {mark('joint')}{_human(counts['joint'])}{mark('joint')} "
                    f"| {flops['cross']:,.1f} | {flops['joint']:,.1f} |")
    return "\n".join(rows)


def _human(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m kinema.models.dit", description="DiT presets.")
    ap.add_argument("--list", action="store_true", help="print the preset table (params, FLOPs)")
    ap.add_argument("--latent", type=int, nargs=3, default=(5, 32, 32), metavar=("T", "H", "W"),
                    help="latent size for the FLOPs column (default: 17 frames at 256x256 with a 4x8x8 AE)")
    ap.add_argument("--text-len", type=int, default=64, help="text tokens for the FLOPs column")
    args = ap.parse_args(argv)
    if not args.list:
        ap.print_help()
        return
    print(preset_table(tuple(args.latent), args.text_len))
    print(f"\nFLOPs: forward, one sample, latent (T, H, W) = {tuple(args.latent)}, {args.text_len} text tokens; "
          f"training ~3x. Bold: the preset's own conditioning.")


if __name__ == "__main__":
    main()
