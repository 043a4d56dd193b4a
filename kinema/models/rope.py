"""3D rotary position embedding over (frame, row, column) of the latent token grid.

RoPE (Su et al. 2021, RoFormer) rotates each pair of q/k channels by an angle proportional to the
token's position, so the q.k score depends only on the *offset* between two tokens. For video the
head dimension is split into three groups, one per axis, each rotated by its own coordinate
(CogVideoX, HunyuanVideo, Open-Sora 2.0 do the same). Positions come from the grid at run time, so
any duration, size or aspect ratio runs with no new parameters and no interpolation.

Split: time gets ~1/4 of the head dim, rows and columns ~3/8 each (CogVideoX's ratio; Open-Sora 2.0
and HunyuanVideo use 16:56:56 of 128). Space gets more frequencies because a latent frame is 32-96
tokens across and its structure is finer than motion across a few dozen latent frames. Every group
is even, as a rotation acts on pairs.

Text tokens get no rotation, which is the same as position (0, 0, 0) (Open-Sora 2.0 sets
`txt_ids` to zeros): the text encoder already encodes word order, and the video-text score should
not prefer one corner of the video.

All of this runs in fp32 whatever the autocast dtype: angles reach position * 1 rad, and bf16's
8-bit mantissa would put an error of ~0.5 rad on an angle of 100.
"""
from __future__ import annotations

import torch
from torch import Tensor


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of one head given to (frame, row, column); each even, summing to head_dim."""
    if head_dim % 2 or head_dim < 8:
        raise ValueError(f"3D RoPE needs an even head_dim >= 8, got {head_dim}")
    spatial = 2 * (3 * head_dim // 16)  # 3/8 of head_dim, rounded down to even
    return head_dim - 2 * spatial, spatial, spatial


def rope_angles(positions: Tensor, head_dim: int, theta: float = 10000.0) -> Tensor:
    """(N, 3) float positions (frame, row, column) -> (N, head_dim // 2) rotation angles in fp32."""
    positions = positions.float()
    out = []
    for axis, dim in enumerate(rope_split(head_dim)):
        inv_freq = theta ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)  # (dim/2,)
        out.append(positions[:, axis, None] * inv_freq[None, :])  # (N, dim/2)
    return torch.cat(out, dim=-1)  # (N, head_dim/2)


def grid_positions(grid: tuple[int, int, int], device: torch.device | str | None = None) -> Tensor:
    """(T*H*W, 3) integer coordinates of a (T, H, W) token grid, in the row-major order patchify uses."""
    t, h, w = grid
    coords = torch.meshgrid(torch.arange(t, device=device), torch.arange(h, device=device),
                            torch.arange(w, device=device), indexing="ij")  # 3 x (T, H, W)
    return torch.stack(coords, dim=-1).reshape(t * h * w, 3)  # (T*H*W, 3)


def rope_cos_sin(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0,
                 device: torch.device | str | None = None,
                 scale: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[Tensor, Tensor]:
    """cos and sin, each (T*H*W, head_dim // 2) fp32, for every token of a (T, H, W) grid whose
    positions are multiplied by `scale` per axis (position interpolation: a model re-patched from a
    1x2x2 to a 1x1x1 patch uses (1, 0.5, 0.5), so a token offset still means the same distance in
    pixels as it did when it was trained)."""
    positions = grid_positions(grid, device).float() * torch.tensor(scale, device=device)  # (N, 3)
    angles = rope_angles(positions, head_dim, theta)  # (N, head_dim/2)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of x (..., N, head_dim) by the angles behind cos/sin (N, head_dim/2).

    Computed in fp32 and cast back, so the rotation is exact to fp32 under bf16 autocast. Each pair
    is a complex number x1 + i x2 times cos + i sin: the same products and sums as writing out
    (x1 cos - x2 sin, x1 sin + x2 cos) (equal to the bit, values and gradients), in one kernel
    instead of six (~8x faster on a CPU).
    """
    xc = torch.view_as_complex(x.float().contiguous().unflatten(-1, (-1, 2)))  # (..., N, head_dim/2) complex
    return torch.view_as_real(xc * torch.complex(cos, sin)).flatten(-2).to(x.dtype)  # (..., N, head_dim)
